// golioth-sync console: start-up (token from the fragment or pasted), the sign-in screen and
// the client-side router (History API paths under /console/, each a screen module).

import { adoptFragment, claims, get, isUuid, session, setUnauthorizedHandler, forgetServices } from './api.js';
import { clearErrors, field, h, loading, notify, replace, setFieldError } from './dom.js';
import * as services from './services.js';
import * as sync from './sync.js';
import * as history from './history.js';
import * as conflicts from './conflicts.js';

const main = () => document.getElementById('main');
let cleanup = null;
let signInReason = '';

/** The screens: a path pattern (segments; `:x` captures) and its render function. */
const ROUTES = [
  ['services', services.list, 'services'],
  ['services/new', services.edit, 'services'],
  ['services/:id', services.edit, 'services'],
  ['sync', sync.render, 'sync'],
  ['history', history.render, 'history'],
  ['runs/:id', history.run, 'history'],
  ['conflicts', conflicts.list, 'conflicts'],
  ['conflicts/device/:device', conflicts.device, 'conflicts'],
  ['conflicts/:id', conflicts.one, 'conflicts'],
];

function match(path) {
  const rel = path.replace(/^\/console\/?/, '').replace(/\/$/, '');
  const parts = rel ? rel.split('/') : [];
  for (const [pattern, render, nav] of ROUTES) {
    const segs = pattern.split('/');
    if (segs.length !== parts.length) continue;
    const params = {};
    if (segs.every((s, i) => (s.startsWith(':') ? ((params[s.slice(1)] = decodeURIComponent(parts[i])), true) : s === parts[i]))) {
      return { render, params, nav };
    }
  }
  return null;
}

/** Go to a console path (pushes history unless `replace`). */
export function navigate(path, { replace: rep = false } = {}) {
  if (rep) history_().replaceState(null, '', path);
  else history_().pushState(null, '', path);
  route();
}
function history_() {
  return window.history;
}

function setNav(active) {
  const nav = document.getElementById('nav');
  nav.hidden = false;
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.nav === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function who() {
  const c = claims(session.token) || {};
  const el = document.getElementById('who');
  replace(el,
    h('span', { class: 'muted', title: `user ${c.sub || '?'} in organization ${session.org}` },
      `user ${String(c.sub || '?').slice(0, 8)}… · org ${session.org.slice(0, 8)}…`),
    ' ',
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
}

function signOut() {
  session.forget();
  forgetServices();
  signInReason = 'Signed out. The token was removed from this tab.';
  route();
}

async function route() {
  if (cleanup) {
    try { cleanup(); } catch { /* a screen's cleanup never blocks navigation */ }
    cleanup = null;
  }
  clearErrors();
  const path = window.location.pathname;
  if (path === '/console' || path === '/console/' || path === '/console/index.html') {
    history_().replaceState(null, '', '/console/services');
    return route();
  }
  const why = session.problem();
  if (!session.token || !session.org || why) {
    if (why) {
      signInReason = why;
      session.clear();
    }
    return signIn();
  }
  who();
  const m = match(path);
  const el = main();
  if (!m) {
    document.getElementById('nav').hidden = false;
    replace(el, h('h1', {}, 'Not found'), h('p', {}, 'No console screen at this address. ', h('a', { href: '/console/services' }, 'Go to the services.')));
    return undefined;
  }
  setNav(m.nav);
  const query = new URLSearchParams(window.location.search);
  replace(el, h('p', { class: 'muted' }, 'Loading…'));
  try {
    cleanup = (await loading(() => m.render(el, m.params, query))) || null;
  } catch (err) {
    if (err && err.status === 401) return undefined;
    replace(el, h('h1', {}, 'Could not load this screen'),
      h('div', { class: 'notice error inline', role: 'alert' }, h('strong', {}, err.title || 'Error'), ' ', err.detail || err.message || ''),
      h('p', {}, h('button', { type: 'button', onclick: () => route() }, 'Try again')));
  }
  const heading = el.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    document.title = `${heading.textContent} · golioth-sync console`;
    if (document.activeElement === document.body || !el.contains(document.activeElement)) heading.focus({ preventScroll: true });
  }
  return undefined;
}

/** The sign-in screen: paste a bearer token and an organization id. */
function signIn() {
  document.getElementById('nav').hidden = true;
  replace(document.getElementById('who'));
  const token = h('textarea', { rows: '4', autocomplete: 'off', spellcheck: 'false', required: true, value: '' });
  const org = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', required: true, value: session.org, placeholder: '00000000-0000-0000-0000-000000000000' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', { tabindex: '-1' }, 'Sign in'),
    signInReason ? h('div', { class: 'notice error inline', role: 'alert', id: 'signin-reason' }, signInReason) : null,
    h('p', {}, 'Paste the platform\'s bearer token (a JWT) and the organization to manage. ',
      'They are kept in this tab only (sessionStorage) and sent as an Authorization header, never in a URL. ',
      'A link of the form ', h('code', {}, '/console/#token=…&org=…'), ' signs in directly.'),
    field('Bearer token (JWT)', token),
    field('Organization id', org, 'The uuid in /api/v1/orgs/:org_id/…'),
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = token.value.trim().replace(/^Bearer\s+/i, '');
    const o = org.value.trim();
    setFieldError(token, claims(t) ? null : 'Not a JWT: expected three base64url parts separated by dots.');
    setFieldError(org, isUuid(o) ? null : 'Enter the organization\'s uuid.');
    if (!claims(t) || !isUuid(o)) return;
    session.set(t, o);
    const why = session.problem();
    if (why) {
      signInReason = why;
      session.clear();
      signIn();
      return;
    }
    submit.disabled = true;
    try {
      await check();
      signInReason = '';
      notify('ok', 'Signed in');
      route();
    } catch {
      submit.disabled = false;
    }
  });
  replace(main(), form);
  document.title = 'Sign in · golioth-sync console';
  (signInReason ? form.querySelector('h1') : token).focus();
}

/** Check the session against the API once (a token the server refuses shows why). */
async function check() {
  try {
    await loading(() => get('/services'));
  } catch (err) {
    if (err.status === 404) {
      signInReason = `Organization ${session.org} was not found, or this user is not a member of it.`;
      session.clear();
      signIn();
    } else if (err.status !== 401) {
      signInReason = `${err.title}: ${err.detail || ''}`;
      signIn();
    }
    throw err;
  }
}

setUnauthorizedHandler((problem) => {
  const expired = /expired/i.test(`${problem.detail || ''} ${problem.title || ''}`);
  signInReason = expired
    ? 'Your token has expired. Sign in again with a new one.'
    : `The server refused the token (${problem.detail || problem.title || '401'}). Sign in again with a valid one.`;
  session.clear();
  forgetServices();
  signIn();
});

document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, window.location.href);
  if (url.origin !== window.location.origin || !url.pathname.startsWith('/console')) return;
  ev.preventDefault();
  if (url.pathname + url.search !== window.location.pathname + window.location.search) navigate(url.pathname + url.search);
});
/** A console link opened in a tab that already shows the console: adopt its token and org. */
function adoptLink() {
  if (!adoptFragment()) return false;
  forgetServices();
  signInReason = '';
  if (session.token && session.org && !session.problem()) check().then(() => route(), () => {});
  else route();
  return true;
}
// A fragment change fires popstate (then hashchange): adopt a console link before routing.
window.addEventListener('popstate', () => {
  if (!adoptLink()) route();
});
window.addEventListener('hashchange', () => adoptLink());

const adopted = adoptFragment();
if (adopted && session.token && session.org && !session.problem()) {
  check().then(() => route(), () => {});
} else {
  route();
}
