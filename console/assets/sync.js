// golioth-sync console: the sync screen — import / export / bidirectional, a dry run first
// (the planned changes per device and side), then the real run with live progress (the run is
// polled; cancel), plus the run panel the history screen reuses.

import { api, get, post, qs, services as loadServices } from './api.js';
import { act, badge, busy, h, notify, notifyError, replace, show, table, when } from './dom.js';

const TERMINAL = ['completed', 'completed_with_errors', 'failed', 'cancelled'];
export const isTerminal = (run) => TERMINAL.includes(run.status);

const COUNTS = [
  ['processed', 'Devices processed'],
  ['created_local', 'Created locally'],
  ['updated_local', 'Updated locally'],
  ['deleted_local', 'Deleted locally'],
  ['created_remote', 'Created in Golioth'],
  ['updated_remote', 'Updated in Golioth'],
  ['deleted_remote', 'Deleted in Golioth'],
  ['conflicts', 'Conflicts'],
  ['unchanged', 'Unchanged'],
  ['failed', 'Failed'],
  ['skipped', 'Skipped'],
];

function changeList(changes) {
  if (!changes || typeof changes !== 'object') return [];
  return Object.entries(changes).map(([k, v]) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && ('add' in v || 'remove' in v)) {
      const parts = [];
      if (v.add && v.add.length) parts.push(`+${v.add.join(', +')}`);
      if (v.remove && v.remove.length) parts.push(`−${v.remove.join(', −')}`);
      return `${k}: ${parts.join(' ') || show(v)}`;
    }
    return `${k} → ${show(v)}`;
  });
}

/** One side of a device's plan, as short lines. */
export function describeWrite(w) {
  if (!w) return ['no change'];
  switch (w.op) {
    case 'create':
      return [`create “${(w.desired && w.desired.name) || '?'}”`];
    case 'update':
      return [`update: ${changeList(w.changes).join('; ') || 'reported fields'}`];
    case 'soft_delete':
      return ['soft-delete (tombstone)'];
    case 'delete':
      return ['delete'];
    default:
      return [w.op || show(w)];
  }
}

function deviceLabel(d) {
  const name = (d.local && d.local.desired && d.local.desired.name) || (d.remote && d.remote.desired && d.remote.desired.name);
  const ids = [d.external_id ? `Golioth ${d.external_id}` : null, d.device_id ? `local ${String(d.device_id).slice(0, 8)}…` : null].filter(Boolean).join(' · ');
  return [name ? h('strong', {}, name) : null, name ? h('br') : null, h('small', { class: 'muted' }, ids || 'new device')];
}

function conflictLines(d) {
  return (d.conflicts || []).map((c) => {
    const x = c.conflict || {};
    return `${c.op.replace(/_/g, ' ')}: ${x.field || c.field || '?'}${x.local_value !== undefined ? ` (local ${show(x.local_value)} / Golioth ${show(x.remote_value)})` : ''}`;
  });
}

/** What a plan does to the device's link with its Golioth twin, in words (not the op's name). */
export function describeLink(a) {
  if (!a) return '';
  switch (a.op) {
    case 'link':
      return a.external_id ? `links to Golioth ${a.external_id}` : 'links to the device Golioth creates';
    case 'set_base':
      return 'records the values both sides now agree on';
    case 'detach':
      return 'stops syncing this device (the link is kept)';
    case 'delete':
      return 'removes the link';
    default:
      return String(a.op || '').replace(/_/g, ' ');
  }
}

/** The per-device details of a run (a dry run's plan, or a real run's outcomes). */
export function detailsTable(run) {
  const details = run.details || [];
  if (!details.length) return h('p', { class: 'muted', id: 'run-details-empty' }, run.dry_run ? 'Nothing to change: both sides agree.' : 'No per-device details.');
  const rows = details.map((d) => h('tr', { class: `detail s-${d.status || ''}` },
    h('th', { scope: 'row' }, deviceLabel(d)),
    h('td', {}, badge(d.status || 'done')),
    h('td', {}, d.status === 'planned' ? describeWrite(d.local).map((l) => h('div', {}, l)) : show(d.operation || '')),
    h('td', {}, d.status === 'planned' ? describeWrite(d.remote).map((l) => h('div', {}, l)) : show(d.error || '')),
    h('td', {}, describeLink(d.assignment) || '—'),
    h('td', {}, conflictLines(d).map((l) => h('div', {}, l)))));
  const processed = (run.summary && run.summary.processed) || 0;
  return h('div', {},
    table(run.dry_run ? 'Planned changes per device' : 'Per-device results',
      run.dry_run ? ['Device', 'Status', 'Local (platform)', 'Golioth', 'Link', 'Conflicts'] : ['Device', 'Status', 'Operation', 'Error', 'Link', 'Conflicts'],
      rows, { id: 'run-details' }),
    details.length < processed ? h('p', { class: 'muted' }, `Showing the first ${details.length} devices with changes.`) : null);
}

/** The progress and counters of a run. */
export function runPanel(run, { onCancel } = {}) {
  const s = run.summary || {};
  const p = run.progress || {};
  const total = p.total || p.targets_total || 0;
  const seen = p.devices_seen || p.targets_done || s.processed || 0;
  const bar = isTerminal(run)
    ? h('progress', { max: '1', value: '1', 'aria-label': 'Run progress' })
    : total
      ? h('progress', { max: String(total), value: String(Math.min(seen, total)), 'aria-label': 'Run progress' })
      : h('progress', { 'aria-label': 'Run progress' });
  const cancel = !isTerminal(run) && onCancel ? h('button', { type: 'button', class: 'danger', id: 'cancel-run' }, 'Cancel run') : null;
  if (cancel) cancel.addEventListener('click', () => onCancel(cancel));
  return h('section', { class: 'card run', id: 'run-panel', 'aria-live': 'polite', dataset: { status: run.status, run: run.id } },
    h('div', { class: 'title-row' },
      h('h2', {}, run.dry_run ? 'Dry run ' : 'Run ', badge(run.status)),
      cancel),
    h('p', { class: 'muted' },
      `${run.operation}${run.dry_run ? ' (dry run: nothing is written)' : ''} · phase ${p.phase || run.phase || '—'}`,
      ` · pages ${p.pages_fetched ?? p.pages ?? 0}${p.expected_pages ? ` of ${p.expected_pages}` : ''}`,
      total ? ` · devices ${seen} of ${total}` : ` · devices ${seen}`,
      ` · started `, when(run.started_at || run.created_at),
      run.finished_at ? [' · finished ', when(run.finished_at)] : null),
    bar,
    run.error ? h('div', { class: 'notice error inline', role: 'alert' }, h('strong', {}, 'Error: '), show(run.error)) : null,
    h('dl', { class: 'counts', id: 'run-counts' },
      COUNTS.filter(([k]) => k === 'processed' || s[k]).map(([k, label]) => h('div', { dataset: { count: k } }, h('dt', {}, label), h('dd', {}, String(s[k] || 0))))));
}

/** The sync screen. */
export async function render(main, _params, query) {
  const items = await loadServices(true);
  if (!items.length) {
    replace(main, h('h1', {}, 'Sync'), h('p', {}, 'There is no service to sync yet. ', h('a', { href: '/console/services/new' }, 'Create one.')));
    return undefined;
  }
  const wanted = query.get('service');
  const svc = h('select', { id: 'sync-service' }, items.map((s) => h('option', { value: s.id, selected: s.id === wanted }, s.name)));
  const current = () => items.find((s) => s.id === svc.value) || items[0];
  const ops = ['import', 'export', 'bidirectional'];
  const radios = ops.map((op) => h('input', { type: 'radio', name: 'operation', value: op, id: `op-${op}` }));
  const pickDefault = () => {
    const dir = (current().config && current().config.sync_direction) || 'bidirectional';
    for (const r of radios) r.checked = r.value === dir;
  };
  pickDefault();
  const force = h('input', { type: 'checkbox', id: 'sync-force' });
  const dryBtn = h('button', { type: 'button', class: 'primary', id: 'dry-run' }, 'Dry run');
  const applyBtn = h('button', { type: 'button', id: 'apply-run', disabled: true }, 'Apply');
  const status = h('p', { class: 'muted', id: 'sync-hint' }, 'Start with a dry run: it shows what would change on each side without writing anything.');
  const out = h('div', { id: 'sync-output' });
  let planned = null; // {service, operation} of the last finished dry run
  let stopped = false;
  let poll = null;

  const operation = () => (radios.find((r) => r.checked) || radios[2]).value;
  const invalidate = () => {
    planned = null;
    applyBtn.disabled = true;
    status.textContent = 'Start with a dry run: it shows what would change on each side without writing anything.';
  };
  svc.addEventListener('change', () => { pickDefault(); invalidate(); replace(out); window.history.replaceState(null, '', `/console/sync${qs({ service: svc.value })}`); });
  for (const r of radios) r.addEventListener('change', invalidate);

  function show_(run) {
    replace(out, runPanel(run, { onCancel: cancel }), run.dry_run || (run.details && run.details.length) ? detailsTable(run) : null);
  }

  async function cancel(btn) {
    const id = out.querySelector('#run-panel').dataset.run;
    const r = await act(btn, 'Cancelling…', () => post(`/sync-runs/${id}/cancel`), { okTitle: 'Run cancelled', what: 'Cancel failed' });
    if (r) show_(r.data);
  }

  /**
   * Start a run and follow it: the POST processes slices within its time budget (200 when it
   * finished, 202 with progress otherwise); while it is unfinished the run is polled every
   * second for live progress and POSTed again to process the next slice (the API answers the
   * active run rather than starting another).
   */
  async function start(body, btn) {
    const sid = current().id;
    replace(out, h('p', { class: 'muted' }, body.dry_run ? 'Planning the changes…' : 'Starting the sync…'));
    const busyText = body.dry_run ? 'Planning…' : 'Syncing…';
    const first = await act(btn, busyText, () => api('POST', `/services/${sid}/sync`, body), { what: body.dry_run ? 'Dry run failed' : 'Sync failed' });
    if (!first) return null;
    // The button stays busy while the run is followed to its end.
    const idle = busy(btn, busyText);
    try {
      return await follow(first, body, sid);
    } finally {
      idle();
    }
  }

  async function follow(first, body, sid) {
    let run = first.data;
    show_(run);
    if (run.existing) notify('info', 'A run was already active', 'Showing the run in progress for this service.');
    let last = JSON.stringify(run.progress);
    let driving = false;
    while (!isTerminal(run) && !stopped) {
      await new Promise((r) => { poll = setTimeout(r, 1000); });
      if (stopped) return null;
      try {
        run = await get(`/sync-runs/${run.id}`);
      } catch (err) {
        notifyError(err, 'Could not read the run');
        return null;
      }
      show_(run);
      const now = JSON.stringify(run.progress);
      if (!isTerminal(run) && !driving && now === last) {
        driving = true;
        api('POST', `/services/${sid}/sync`, body).catch(() => {}).finally(() => { driving = false; });
      }
      last = now;
    }
    return run;
  }

  dryBtn.addEventListener('click', async () => {
    invalidate();
    const op = operation();
    const run = await start({ operation: op, dry_run: true, force: force.checked }, dryBtn);
    if (!run) return;
    const s = run.summary || {};
    if (run.status === 'completed' || run.status === 'completed_with_errors') {
      planned = { service: current().id, operation: op };
      applyBtn.disabled = false;
      status.textContent = `Dry run done: ${s.processed || 0} devices looked at. Apply runs the same ${op} for real.`;
      notify('ok', 'Dry run finished', `${s.processed || 0} devices, ${(run.details || []).length} with changes, ${s.conflicts || 0} conflicts`);
      applyBtn.focus();
    } else {
      notify('error', `Dry run ${run.status.replace(/_/g, ' ')}`, show(run.error || ''));
    }
  });
  applyBtn.addEventListener('click', async () => {
    if (!planned || planned.service !== current().id || planned.operation !== operation()) return;
    applyBtn.disabled = true;
    const run = await start({ operation: planned.operation, force: force.checked }, applyBtn);
    applyBtn.disabled = true;
    planned = null;
    if (!run) return;
    const s = run.summary || {};
    const kind = run.status === 'completed' ? 'ok' : 'error';
    notify(kind, `Sync ${run.status.replace(/_/g, ' ')}`, `${s.processed || 0} devices processed, ${s.failed || 0} failed, ${s.conflicts || 0} conflicts`);
    status.textContent = 'Done. Run another dry run to plan the next sync.';
  });

  replace(main,
    h('h1', {}, 'Sync'),
    h('section', { class: 'card' },
      h('div', { class: 'field' }, h('label', { for: 'sync-service' }, 'Service'), svc),
      h('fieldset', { class: 'inline-radios' }, h('legend', {}, 'Operation'),
        ops.map((op, i) => h('span', { class: 'radio' }, radios[i], h('label', { for: `op-${op}` }, op)))),
      h('div', { class: 'field check' }, force, h('label', { for: 'sync-force' }, 'Force (run an inactive service; skip a queued run\'s backoff)')),
      status,
      h('div', { class: 'actions' }, dryBtn, ' ', applyBtn, ' ', h('a', { class: 'button', href: `/console/history${qs({ service: current().id })}` }, 'History'))),
    out);
  return () => {
    stopped = true;
    clearTimeout(poll);
  };
}
