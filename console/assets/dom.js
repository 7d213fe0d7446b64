// golioth-sync console: DOM helpers (elements built as nodes, never from HTML strings),
// notices (a live region), the busy state of buttons and the page, and small formatters.

/** Build an element: h('button', {class: 'x', onclick: f}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A fresh element id. */
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control: {label, control, hint}. The label points at the control. */
export function field(label, control, hint) {
  const id = control.id || nextId();
  control.id = id;
  const hintEl = hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  const err = h('small', { class: 'error', id: `${id}-error`, hidden: true });
  const wrap = control.type === 'checkbox'
    ? h('div', { class: 'field check' }, control, h('label', { for: id }, label), hintEl, err)
    : h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl, err);
  return wrap;
}

/** Show (or clear, with null) a validation message under a control. */
export function setFieldError(control, message) {
  const err = document.getElementById(`${control.id}-error`);
  if (!err) return;
  if (message) {
    err.textContent = message;
    err.hidden = false;
    control.setAttribute('aria-invalid', 'true');
    const described = (control.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    if (!described.includes(err.id)) described.push(err.id);
    control.setAttribute('aria-describedby', described.join(' '));
  } else {
    err.textContent = '';
    err.hidden = true;
    control.removeAttribute('aria-invalid');
  }
}

const notices = () => document.getElementById('notices');

/** How long a success or info notice stays (ms); errors stay until dismissed. */
export const NOTICE_MS = 5000;
/** At most this many notices are visible; the oldest leaves first (errors last). */
export const MAX_NOTICES = 3;

/**
 * A notice: kind is 'ok' | 'error' | 'info'. Success and info notices leave by themselves after
 * NOTICE_MS (held while the pointer or focus is on them); errors stay until dismissed. At most
 * MAX_NOTICES are shown: a new one pushes out the oldest success first, then the oldest error.
 */
export function notify(kind, title, detail) {
  const box = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { kind } },
    h('div', {}, h('strong', {}, title), detail ? h('span', { class: 'detail' }, ` ${detail}`) : null),
    h('button', { type: 'button', class: 'link dismiss', 'aria-label': `Dismiss: ${title}`, onclick: () => box.remove() }, '×'));
  const list = notices();
  list.prepend(box);
  while (list.children.length > MAX_NOTICES) {
    const all = Array.from(list.children);
    const oldest = all.reverse().find((n) => n.dataset.kind !== 'error') || all[0];
    oldest.remove();
  }
  if (kind !== 'error') {
    let held = false;
    let due = false;
    const leave = () => { if (held) due = true; else box.remove(); };
    const hold = () => { held = true; };
    const release = () => { held = false; if (due) box.remove(); };
    box.addEventListener('mouseenter', hold);
    box.addEventListener('mouseleave', release);
    box.addEventListener('focusin', hold);
    box.addEventListener('focusout', release);
    setTimeout(leave, NOTICE_MS);
  }
  return box;
}

/** Dismiss the error notices (after the action they were about succeeded, or on navigation). */
export function clearErrors() {
  for (const n of notices().querySelectorAll('.notice.error')) n.remove();
}

/** A notice for a failed call: the problem+json title and detail. */
export function notifyError(err, what) {
  const title = err && err.title ? err.title : 'Error';
  const detail = err && err.detail ? err.detail : (err && err.message) || '';
  return notify('error', what ? `${what}: ${title}` : title, detail);
}

let busyCount = 0;
function pageBusy(delta) {
  busyCount = Math.max(0, busyCount + delta);
  const bar = document.getElementById('busy');
  if (bar) bar.hidden = busyCount === 0;
  document.body.setAttribute('aria-busy', busyCount > 0 ? 'true' : 'false');
}

/** Run `fn` with the page marked busy. */
export async function loading(fn) {
  pageBusy(1);
  try {
    return await fn();
  } finally {
    pageBusy(-1);
  }
}

/**
 * Mark a button busy (disabled, `aria-busy`, saying `busyText`) until the returned function is
 * called, which restores it. For actions longer than one request (a sync followed to its end).
 */
export function busy(button, busyText) {
  if (!button) return () => {};
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.textContent = busyText;
  return () => {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  };
}

/**
 * Run an action from a button: the button is disabled and says `busyText` while it runs, the page
 * shows its busy bar, and a notice reports success (`okTitle`, when given) or the problem.
 * Returns the action's result, or undefined when it failed.
 */
export async function act(button, busyText, fn, { okTitle, okDetail, what } = {}) {
  const idle = busy(button, busyText);
  try {
    const result = await loading(fn);
    clearErrors();
    if (okTitle) notify('ok', okTitle, typeof okDetail === 'function' ? okDetail(result) : okDetail);
    return result;
  } catch (err) {
    notifyError(err, what);
    return undefined;
  } finally {
    idle();
  }
}

/**
 * A table. On a narrow screen (CSS, below 640 px) each row becomes a stacked card: every cell
 * carries its column's name in `data-label`, which the stylesheet shows before the value, and
 * the header row is hidden but for headers marked `data-keep` (e.g. a "select all" box).
 */
export function table(caption, headers, rows, attrs = {}) {
  const names = headers.map((t) => (t instanceof Node ? (t.getAttribute && t.getAttribute('aria-label')) || t.textContent || '' : String(t)));
  for (const row of [rows].flat(Infinity)) {
    if (!(row instanceof Element)) continue;
    Array.from(row.children).forEach((cell, i) => {
      if (names[i] && !cell.dataset.label) cell.dataset.label = names[i];
    });
  }
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', { ...attrs, class: `${attrs.class || ''} stack`.trim() },
      h('caption', { class: 'sr-only' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', class: t instanceof Element && 'keep' in t.dataset ? 'keep' : null }, t)))),
      h('tbody', {}, rows)));
}

/** A compact relative + absolute time. */
export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  let rel;
  if (Math.abs(s) < 60) rel = `${s}s ago`;
  else if (Math.abs(s) < 3600) rel = `${Math.round(s / 60)} min ago`;
  else if (Math.abs(s) < 86400) rel = `${Math.round(s / 3600)} h ago`;
  else rel = `${Math.round(s / 86400)} d ago`;
  return h('time', { datetime: d.toISOString(), title: abs }, rel);
}

/** A value from the API as short text (JSON for arrays and objects). */
export function show(v) {
  if (v === undefined) return '—';
  if (v === null) return 'null';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** A status badge. */
export function badge(status) {
  const s = status || 'none';
  return h('span', { class: `badge s-${s.replace(/[^a-z_]/g, '')}` }, s.replace(/_/g, ' '));
}

/** Copy text to the clipboard (falls back to selecting it in `source`). */
export async function copy(text, source) {
  try {
    await navigator.clipboard.writeText(text);
    notify('ok', 'Copied to the clipboard');
  } catch {
    if (source && source.select) source.select();
    else if (source) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    notify('info', 'Select and copy', 'The browser did not allow clipboard access; the text is selected.');
  }
}

/** Go to another console screen (the router listens to popstate). */
export function go(path) {
  window.history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}
