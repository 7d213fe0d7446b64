// golioth-sync console: conflicts — the pending list with counts (per service, per field), a
// device's conflicts with base / local / Golioth side by side and resolve as local / remote /
// custom (or link / create for identity conflicts), bulk resolve after the server's own preview
// (a dry run of the bulk resolve), and resolved conflicts with who resolved them and when.

import { claims, get, post, qs, session, services as loadServices } from './api.js';
import { act, badge, field, go, h, notify, replace, setFieldError, show, table, when } from './dom.js';
import { parseCustom } from './validate.js';

const STATUSES = ['pending', 'resolved', 'auto_resolved', 'superseded'];
const PAGE = 100;

function who(userId) {
  if (!userId) return 'the sync policy';
  const me = (claims(session.token) || {}).sub;
  return userId === me ? `you (${String(userId).slice(0, 8)}…)` : `${String(userId).slice(0, 8)}…`;
}

function deviceName(c) {
  return c.device_name || (c.external_device_id ? `Golioth ${c.external_device_id}` : 'unknown device');
}

function deviceHref(c) {
  return c.device_id ? `/console/conflicts/device/${c.device_id}` : `/console/conflicts/${c.id}`;
}

function value(v, cls) {
  return h('code', { class: `val ${cls || ''}` }, show(v));
}

/** The list: ?status=&service= */
export async function list(main, _params, query) {
  const items = await loadServices(true);
  const names = Object.fromEntries(items.map((s) => [s.id, s.name]));
  const st = STATUSES.includes(query.get('status')) ? query.get('status') : 'pending';
  const svc = query.get('service') || '';
  const device = query.get('device') || '';
  const page = await get(`/conflicts${qs({ status: st, service_id: svc, device_id: device, limit: PAGE })}`);
  const conflicts = page.items || [];
  const stats = st === 'pending'
    ? await Promise.all(items.map((s) => get(`/services/${s.id}/stats`).then((x) => [s, x.pending_conflicts || 0], () => [s, null])))
    : [];

  const status = h('select', { id: 'c-status' }, STATUSES.map((s) => h('option', { value: s, selected: s === st }, s.replace(/_/g, ' '))));
  const service = h('select', { id: 'c-service' }, h('option', { value: '' }, 'All services'), items.map((s) => h('option', { value: s.id, selected: s.id === svc }, s.name)));
  const filters = h('form', { class: 'filters', 'aria-label': 'Filters' },
    h('div', { class: 'field' }, h('label', { for: 'c-status' }, 'Status'), status),
    h('div', { class: 'field' }, h('label', { for: 'c-service' }, 'Service'), service),
    h('div', { class: 'field end' }, h('button', { type: 'submit' }, 'Show')));
  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    go(`/console/conflicts${qs({ status: status.value, service: service.value, device })}`);
  });

  const byField = {};
  for (const c of conflicts) byField[c.field_name] = (byField[c.field_name] || 0) + 1;
  const total = stats.reduce((n, [, k]) => n + (k || 0), 0);
  const counts = st === 'pending'
    ? h('section', { class: 'card counts-card', 'aria-label': 'Pending conflict counts', id: 'conflict-counts' },
      h('p', { class: 'big' }, h('strong', {}, String(svc ? conflicts.length : total)), ` pending conflict${(svc ? conflicts.length : total) === 1 ? '' : 's'}`),
      h('ul', { class: 'chips' },
        stats.filter(([, k]) => k).map(([s, k]) => h('li', {}, h('a', { href: `/console/conflicts${qs({ service: s.id })}` }, `${s.name}: ${k}`))),
        Object.entries(byField).map(([f, k]) => h('li', { class: 'chip-field' }, `${f}: ${k}`))))
    : null;

  let body;
  if (!conflicts.length) {
    body = h('p', { class: 'empty muted', id: 'no-conflicts' }, st === 'pending' ? 'No pending conflicts. Both sides agree wherever a field is synced.' : `No ${st.replace(/_/g, ' ')} conflicts.`);
  } else if (st === 'pending') {
    body = pendingTable(conflicts, names);
  } else {
    body = table(`${st} conflicts`, ['Device', 'Field', 'Strategy', 'Resolved value', 'Local / Golioth then', 'Resolved by', 'When'],
      conflicts.map((c) => h('tr', {},
        h('th', { scope: 'row' }, h('a', { href: deviceHref(c) }, deviceName(c)), h('br'), h('small', { class: 'muted' }, names[c.service_id] || '')),
        h('td', {}, c.field_name),
        h('td', {}, c.resolution_strategy || c.resolution_status),
        h('td', {}, value(c.resolved_value)),
        h('td', {}, value(c.local_value), ' / ', value(c.remote_value)),
        h('td', { class: 'resolved-by' }, c.resolution_status === 'superseded' ? 'sides converged' : who(c.resolved_by)),
        h('td', {}, when(c.resolved_at || c.updated_at)))), { id: 'resolved-table' });
  }
  replace(main,
    h('h1', {}, 'Conflicts'),
    device ? h('p', {}, 'Showing one device. ', h('a', { href: '/console/conflicts' }, 'Show all.')) : null,
    filters, counts, body,
    page.next_cursor ? h('p', { class: 'muted' }, `Showing the first ${PAGE}; narrow the filters to see the rest.`) : null);
  return undefined;
}

function pendingTable(conflicts, names) {
  const boxes = conflicts.map((c) => h('input', { type: 'checkbox', id: `sel-${c.id}`, value: c.id, 'aria-label': `Select ${deviceName(c)} ${c.field_name}`, disabled: !(c.allowed_resolutions || []).includes('local') }));
  const all = h('input', { type: 'checkbox', id: 'sel-all', 'aria-label': 'Select every conflict on this page' });
  all.addEventListener('change', () => { for (const b of boxes) if (!b.disabled) b.checked = all.checked; });
  const rows = conflicts.map((c, i) => h('tr', { dataset: { conflict: c.id } },
    h('td', { dataset: { label: 'Select' } }, boxes[i]),
    h('th', { scope: 'row' }, h('a', { href: deviceHref(c) }, deviceName(c)), h('br'), h('small', { class: 'muted' }, names[c.service_id] || c.service_name || '')),
    h('td', {}, c.field_name, h('br'), h('small', { class: 'muted' }, c.conflict_type.replace(/_/g, ' '))),
    h('td', {}, value(c.base_value, 'base')),
    h('td', {}, value(c.local_value, 'local')),
    h('td', {}, value(c.remote_value, 'remote')),
    h('td', {}, when(c.created_at))));

  const resolution = h('select', { id: 'bulk-resolution' },
    h('option', { value: 'local' }, 'keep the local (platform) value'),
    h('option', { value: 'remote' }, 'keep the Golioth value'));
  const previewBtn = h('button', { type: 'button', id: 'bulk-preview' }, 'Preview');
  const preview = h('div', { id: 'bulk-preview-out' });
  previewBtn.addEventListener('click', async () => {
    const chosen = conflicts.filter((c, i) => boxes[i].checked);
    if (!chosen.length) {
      notify('error', 'Nothing selected', 'Tick the conflicts to resolve first.');
      return;
    }
    const res = resolution.value;
    const ids = chosen.map((c) => c.id);
    // The server's own preview (dry_run): the same checks as resolving, nothing written.
    const answer = await act(previewBtn, 'Previewing…', () => post('/conflicts/resolve', { ids, resolution: res, dry_run: true }), { what: 'Preview failed' });
    if (!answer) return;
    const byId = Object.fromEntries(chosen.map((c) => [c.id, c]));
    const results = answer.data.results || [];
    const ok = results.filter((r) => r.status === 'would_resolve');
    const confirmBtn = h('button', { type: 'button', class: 'primary', id: 'bulk-confirm', disabled: !ok.length },
      `Resolve ${ok.length} conflict${ok.length === 1 ? '' : 's'}`);
    confirmBtn.addEventListener('click', async () => {
      const r = await act(confirmBtn, 'Resolving…', () => post('/conflicts/resolve', { ids: ok.map((x) => x.id), resolution: res }), {
        okTitle: 'Bulk resolve done',
        okDetail: (x) => `${x.data.resolved} resolved, ${x.data.failed} failed`,
        what: 'Bulk resolve failed',
      });
      if (!r) return;
      const failed = (r.data.results || []).filter((x) => x.status !== 'resolved');
      if (failed.length) {
        notify('error', `${failed.length} could not be resolved`, failed.map((f) => `${f.code || ''} ${f.error || ''}`.trim()).join('; '));
      }
      go(window.location.pathname + window.location.search);
    });
    replace(preview,
      h('h3', {}, 'What will change'),
      h('p', { id: 'bulk-preview-summary' }, `${answer.data.would_resolve} would be resolved, ${answer.data.failed} would fail. Nothing has been written yet.`),
      table('Bulk resolve preview', ['Device', 'Field', 'Platform now', 'Golioth now', 'Both become', 'Check'],
        results.map((x) => {
          const c = byId[x.id] || {};
          const fine = x.status === 'would_resolve';
          return h('tr', { dataset: { conflict: x.id, status: x.status } },
            h('th', { scope: 'row' }, deviceName(c)),
            h('td', {}, x.field || c.field_name || '—'),
            h('td', {}, 'local_now' in x ? value(x.local_now) : '—', fine && 'value' in x ? (res === 'local' ? ' (kept)' : ' → changes') : null),
            h('td', {}, 'remote_now' in x ? value(x.remote_now) : '—', fine && 'value' in x ? (res === 'remote' ? ' (kept)' : ' → changes') : null),
            h('td', {}, 'value' in x ? value(x.value, 'chosen') : (x.action || '—')),
            h('td', {}, fine ? badge('ok') : [badge('error'), ' ', x.error || x.code || '']));
        }), { id: 'bulk-preview-table' }),
      h('p', { class: 'muted' }, 'The platform is written at once; Golioth gets the value from the device refresh each resolution queues.'),
      h('div', { class: 'actions' }, confirmBtn, ' ', h('button', { type: 'button', id: 'bulk-cancel', onclick: () => { replace(preview); previewBtn.focus(); } }, 'Cancel')));
    (ok.length ? confirmBtn : preview.querySelector('#bulk-cancel')).focus();
  });

  return h('div', {},
    table('Pending conflicts', [h('label', { class: 'select-all', dataset: { keep: '' } }, all, h('span', { class: 'narrow-only' }, ' Select all')), 'Device', 'Field', 'Base (last agreed)', 'Local (platform)', 'Golioth', 'Detected'], rows, { id: 'pending-table' }),
    h('section', { class: 'card', 'aria-labelledby': 'bulk-h' },
      h('h2', { id: 'bulk-h' }, 'Resolve the selected conflicts'),
      h('div', { class: 'filters' },
        h('div', { class: 'field' }, h('label', { for: 'bulk-resolution' }, 'Resolution'), resolution),
        h('div', { class: 'field end' }, previewBtn)),
      preview));
}

function resolveCard(c, redraw) {
  const allowed = c.allowed_resolutions || [];
  const card = h('section', { class: 'card conflict', 'aria-label': `Conflict on ${c.field_name}`, dataset: { conflict: c.id, field: c.field_name } });
  const done = (title) => ({ okTitle: title, okDetail: `${deviceName(c)} · ${c.field_name}`, what: 'Resolve failed' });
  const resolve = async (btn, body, title) => {
    const r = await act(btn, 'Resolving…', () => post(`/conflicts/${c.id}/resolve`, body), done(title));
    if (r) redraw();
  };
  const buttons = [];
  if (allowed.includes('local')) {
    const b = h('button', { type: 'button', class: 'primary', dataset: { resolve: 'local' } }, c.field_name === 'device' ? 'Keep the platform\'s state' : 'Keep local');
    b.addEventListener('click', () => resolve(b, { resolution: 'local' }, 'Resolved: local value kept'));
    buttons.push(b);
  }
  if (allowed.includes('remote')) {
    const b = h('button', { type: 'button', dataset: { resolve: 'remote' } }, c.field_name === 'device' ? 'Keep Golioth\'s state' : 'Keep Golioth');
    b.addEventListener('click', () => resolve(b, { resolution: 'remote' }, 'Resolved: Golioth value kept'));
    buttons.push(b);
  }
  let custom = null;
  if (allowed.includes('custom')) {
    const input = h('input', { type: 'text', id: `custom-${c.id}`, value: typeof c.local_value === 'string' ? c.local_value : show(c.local_value), spellcheck: 'false' });
    const b = h('button', { type: 'button', dataset: { resolve: 'custom' } }, 'Use this value');
    b.addEventListener('click', () => {
      const parsed = parseCustom(c.field_name, input.value);
      setFieldError(input, parsed.error || null);
      if (parsed.error) { input.focus(); return; }
      resolve(b, { resolution: 'custom', value: parsed.value }, 'Resolved with a custom value');
    });
    custom = h('div', { class: 'custom' }, field('Custom value', input, c.field_name === 'tags' || c.field_name === 'hardware_ids' ? 'Comma-separated, or a JSON array.' : null), b);
  }
  let identity = null;
  if (allowed.includes('link') || allowed.includes('create')) {
    const raw = Array.isArray(c.local_value) ? c.local_value : (c.local_value && c.local_value.candidates) || [];
    const cands = raw.map((x) => (typeof x === 'string' ? { id: x } : x)).filter((x) => x && x.id);
    const pick = h('select', { id: `link-${c.id}` }, cands.map((x) => h('option', { value: x.id }, x.name ? `${x.name} (${String(x.id).slice(0, 8)}…)` : x.id)));
    const link = h('button', { type: 'button', dataset: { resolve: 'link' }, disabled: !cands.length }, 'Link to this device');
    link.addEventListener('click', () => resolve(link, { resolution: 'link', device_id: pick.value }, 'Linked'));
    const create = h('button', { type: 'button', dataset: { resolve: 'create' } }, 'Create a new local device');
    create.addEventListener('click', () => resolve(create, { resolution: 'create' }, 'Created a local device'));
    identity = h('div', { class: 'custom' }, allowed.includes('link') ? [field('Local candidate', pick), link, ' '] : null, allowed.includes('create') ? create : null);
  }
  replace(card,
    h('h2', {}, c.field_name, ' ', h('small', { class: 'muted' }, c.conflict_type.replace(/_/g, ' '))),
    h('div', { class: 'sides' },
      h('div', { class: 'side base' }, h('h3', {}, 'Base (last agreed)'), value(c.base_value)),
      h('div', { class: 'side local' }, h('h3', {}, 'Local (platform)'), value(c.local_value), h('small', { class: 'muted' }, 'changed ', when(c.local_updated_at))),
      h('div', { class: 'side remote' }, h('h3', {}, 'Golioth'), value(c.remote_value), h('small', { class: 'muted' }, 'changed ', when(c.remote_updated_at)))),
    c.resolution_status === 'pending'
      ? h('div', { class: 'actions' }, buttons.flatMap((b) => [b, ' ']), custom, identity)
      : h('p', { class: 'resolved-by' }, badge(c.resolution_status), ` ${c.resolution_strategy || ''} → `, value(c.resolved_value), ' by ', who(c.resolved_by), ' ', when(c.resolved_at)));
  return card;
}

/** A device's conflicts: pending ones to resolve, then the resolved ones. */
export async function device(main, params) {
  async function draw() {
    const [pending, resolved] = await Promise.all([
      get(`/conflicts${qs({ device_id: params.device, status: 'pending', limit: 200 })}`),
      get(`/conflicts${qs({ device_id: params.device, status: 'resolved', limit: 20 })}`),
    ]);
    const any = pending.items[0] || resolved.items[0];
    const name = any ? deviceName(any) : params.device;
    replace(main,
      h('p', { class: 'crumbs' }, h('a', { href: '/console/conflicts' }, 'Conflicts'), ' › ', name),
      h('h1', {}, name),
      any ? h('p', { class: 'muted' }, `${any.service_name || ''} · Golioth ${any.external_device_id || '—'} · local ${params.device}`) : null,
      pending.items.length
        ? h('div', { id: 'device-pending' }, pending.items.map((c) => resolveCard(c, () => draw().catch(() => {}))))
        : h('p', { class: 'notice ok inline', id: 'device-clear' }, 'No pending conflicts on this device.'),
      resolved.items.length
        ? h('section', { 'aria-labelledby': 'resolved-h' }, h('h2', { id: 'resolved-h' }, 'Resolved'),
          table('Resolved conflicts of this device', ['Field', 'Choice', 'Value', 'By', 'When'],
            resolved.items.map((c) => h('tr', {},
              h('th', { scope: 'row' }, c.field_name),
              h('td', {}, c.resolution_strategy || '—'),
              h('td', {}, value(c.resolved_value)),
              h('td', { class: 'resolved-by' }, who(c.resolved_by)),
              h('td', {}, when(c.resolved_at)))), { id: 'device-resolved' }))
        : null);
  }
  await draw();
  return undefined;
}

/** One conflict (identity conflicts have no local device yet). */
export async function one(main, params) {
  async function draw() {
    const c = await get(`/conflicts/${params.id}`);
    if (c.device_id && c.resolution_status === 'pending') {
      go(`/console/conflicts/device/${c.device_id}`);
      return;
    }
    replace(main,
      h('p', { class: 'crumbs' }, h('a', { href: '/console/conflicts' }, 'Conflicts'), ' › ', deviceName(c)),
      h('h1', {}, deviceName(c)),
      resolveCard(c, () => draw().catch(() => {})));
  }
  await draw();
  return undefined;
}
