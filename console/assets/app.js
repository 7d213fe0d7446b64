// golioth-sync console: start-up (token from the fragment or pasted), the sign-in screen, the
// header (who is signed in, the organization by name, switching between the user's
// organizations: GET /api/v1/me) and the client-side router (History API paths under /console/,
// each a screen module).

import { adoptFragment, claims, forgetMe, get, isUuid, me, session, setUnauthorizedHandler, forgetServices } from './api.js';
import { clearErrors, field, h, loading, notify, replace, setFieldError } from './dom.js';
import * as services from './services.js';
import * as sync from './sync.js';
import * as history from './history.js';
import * as conflicts from './conflicts.js';

const main = () => document.getElementById('main');
let cleanup = null;
let signInReason = '';
/** Whether a screen has been shown yet (the first one leaves the focus where the page load put it). */
let routed = false;

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

/** The header: the user's name (or email, or short id), the organization's name and role, a
 * switch between the user's organizations, and sign-out. */
async function who() {
  const el = document.getElementById('who');
  const c = claims(session.token) || {};
  const signOutBtn = h('button', { type: 'button', class: 'link', id: 'sign-out', onclick: signOut }, 'Sign out');
  let info = null;
  try {
    info = await me();
  } catch {
    info = null;
  }
  const user = (info && info.user) || { id: c.sub };
  const userLabel = user.name || user.email || `user ${String(user.id || '?').slice(0, 8)}…`;
  const orgs = (info && info.organizations) || [];
  const current = orgs.find((o) => o.id === session.org);
  const orgLabel = current ? current.name : `organization ${session.org.slice(0, 8)}…`;
  let switcher = null;
  if (orgs.length > 1) {
    const select = h('select', { id: 'org-switch' },
      orgs.map((o) => h('option', { value: o.id, selected: o.id === session.org }, `${o.name} (${o.role})`)));
    select.addEventListener('change', () => switchOrg(select.value));
    switcher = h('div', { class: 'org-switch' }, h('label', { for: 'org-switch' }, 'Organization'), select);
  }
  replace(el,
    h('span', { class: 'user', id: 'who-user', title: [user.email, `user ${user.id || '?'}`].filter(Boolean).join(' · ') }, userLabel),
    switcher || h('span', { class: 'org-name', id: 'who-org', title: `organization ${session.org}` },
      orgLabel, current ? h('span', { class: 'muted' }, ` · ${current.role}`) : null),
    signOutBtn);
}

/** Switch to another of the user's organizations (same token). */
function switchOrg(org) {
  if (!isUuid(org) || org === session.org) return;
  session.set(session.token, org);
  forgetServices();
  navigate('/console/services');
  notify('ok', 'Switched organization');
}

function signOut() {
  session.forget();
  forgetServices();
  forgetMe();
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
  who().catch(() => {});
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
    // After a navigation inside the app, the new screen's heading takes the focus (as a page load
    // would put a screen reader there). On the first screen the focus stays at the top of the
    // page, so the first Tab reaches the skip link.
    if (routed && (document.activeElement === document.body || !el.contains(document.activeElement))) heading.focus({ preventScroll: true });
  }
  routed = true;
  return undefined;
}

/** The sign-in screen: paste a bearer token and an organization id. */
function signIn() {
  document.getElementById('nav').hidden = true;
  replace(document.getElementById('who'));
  const token = h('textarea', { rows: '4', autocomplete: 'off', spellcheck: 'false', required: true, value: '' });
  const org = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', value: session.org, placeholder: '00000000-0000-0000-0000-000000000000' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', { tabindex: '-1' }, 'Sign in'),
    signInReason ? h('div', { class: 'notice error inline', role: 'alert', id: 'signin-reason' }, signInReason) : null,
    h('p', {}, 'Paste the platform\'s bearer token (a JWT). ',
      'They are kept in this tab only (sessionStorage) and sent as an Authorization header, never in a URL. ',
      'A link of the form ', h('code', {}, '/console/#token=…&org=…'), ' signs in directly.'),
    field('Bearer token (JWT)', token),
    field('Organization id (optional)', org, 'Leave empty to start in your first organization; the header switches between them.'),
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = token.value.trim().replace(/^Bearer\s+/i, '');
    const o = org.value.trim();
    setFieldError(token, claims(t) ? null : 'Not a JWT: expected three base64url parts separated by dots.');
    setFieldError(org, !o || isUuid(o) ? null : 'Enter the organization\'s uuid, or leave it empty.');
    if (!claims(t) || (o && !isUuid(o))) return;
    session.set(t, o);
    const why = session.problem();
    if (why) {
      signInReason = why;
      session.clear();
      signIn();
      return;
    }
    const label = submit.textContent;
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    submit.textContent = 'Signing in…';
    const idle = () => {
      submit.disabled = false;
      submit.removeAttribute('aria-busy');
      submit.textContent = label;
    };
    try {
      forgetMe();
      if (!o) {
        const info = await loading(() => me());
        const first = (info.organizations || [])[0];
        if (!first) {
          signInReason = 'This user is not a member of any organization.';
          session.clear();
          signIn();
          return;
        }
        session.set(t, first.id);
      }
      await check();
      signInReason = '';
      notify('ok', 'Signed in');
      route();
    } catch {
      idle();
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
  forgetMe();
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
  forgetMe();
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
