// golioth-sync console: history — sync runs and the sync log, each filtered by the server
// (service, status, since / until) and paged with the API's cursors; and one run's page
// (progress, counters, details).

import { get, post, qs, services as loadServices } from './api.js';
import { act, badge, h, replace, show, table, when } from './dom.js';
import { detailsTable, isTerminal, runPanel } from './sync.js';

const RUN_STATUSES = ['queued', 'running', 'completed', 'completed_with_errors', 'failed', 'cancelled'];
const LOG_STATUSES = ['success', 'error', 'conflict', 'skipped', 'warning'];
const PAGE = 25;

function duration(run) {
  if (!run.finished_at) return '—';
  const ms = new Date(run.finished_at) - new Date(run.started_at || run.created_at);
  if (!(ms >= 0)) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The history screen: ?tab=runs|log&service=&status=&since= */
export async function render(main, _params, query) {
  const items = await loadServices(true);
  const names = Object.fromEntries(items.map((s) => [s.id, s.name]));
  const tab = query.get('tab') === 'log' ? 'log' : 'runs';
  const service = h('select', { id: 'f-service' }, h('option', { value: '' }, 'All services'),
    items.map((s) => h('option', { value: s.id, selected: s.id === query.get('service') }, s.name)));
  const statuses = tab === 'runs' ? RUN_STATUSES : LOG_STATUSES;
  const status = h('select', { id: 'f-status' }, h('option', { value: '' }, 'Any status'),
    statuses.map((s) => h('option', { value: s, selected: s === query.get('status') }, s.replace(/_/g, ' '))));
  const since = h('input', { type: 'datetime-local', id: 'f-since', value: localInput(query.get('since')) });
  const until = h('input', { type: 'datetime-local', id: 'f-until', value: localInput(query.get('until')) });
  const apply = h('button', { type: 'submit' }, 'Apply filters');
  const filters = h('form', { class: 'filters', 'aria-label': 'Filters' },
    h('div', { class: 'field' }, h('label', { for: 'f-service' }, 'Service'), service),
    h('div', { class: 'field' }, h('label', { for: 'f-status' }, 'Status'), status),
    h('div', { class: 'field' }, h('label', { for: 'f-since' }, 'Since'), since),
    h('div', { class: 'field' }, h('label', { for: 'f-until' }, 'Until'), until),
    h('div', { class: 'field end' }, apply));
  const out = h('div', { id: 'history-output' });
  const more = h('button', { type: 'button', id: 'older', hidden: true }, 'Older entries');
  const cursors = [];
  let next = null;

  const iso = (input) => (input.value ? new Date(input.value).toISOString() : '');
  const filterQuery = () => qs({ tab, service: service.value, status: status.value, since: iso(since), until: iso(until) });
  const serverFilters = () => ({ service_id: service.value, status: status.value, since: iso(since), until: iso(until) });
  let pages = 0;

  async function load(cursor) {
    let rows;
    if (tab === 'runs') {
      const page = await get(`/sync-runs${qs({ ...serverFilters(), limit: PAGE, cursor })}`);
      next = page.next_cursor;
      rows = page.items.map((r) => h('tr', { dataset: { run: r.id } },
        h('th', { scope: 'row' }, h('a', { href: `/console/runs/${r.id}` }, when(r.created_at))),
        h('td', {}, names[r.service_id] || String(r.service_id).slice(0, 8)),
        h('td', {}, r.operation, r.dry_run ? h('span', { class: 'tag' }, 'dry run') : null),
        h('td', {}, badge(r.status)),
        h('td', { class: 'num' }, String((r.summary && r.summary.processed) || 0)),
        h('td', { class: 'num' }, String((r.summary && r.summary.failed) || 0)),
        h('td', { class: 'num' }, String((r.summary && r.summary.conflicts) || 0)),
        h('td', {}, duration(r))));
      pages += 1;
      out.append(table(pages === 1 ? 'Sync runs' : `Sync runs, page ${pages}`, ['Started', 'Service', 'Operation', 'Status', 'Devices', 'Failed', 'Conflicts', 'Duration'], rows, { class: 'runs', dataset: { page: pages } }));
    } else {
      const page = await get(`/sync-log${qs({ ...serverFilters(), limit: PAGE, cursor })}`);
      next = page.next_cursor;
      rows = page.items.map((e) => h('tr', { dataset: { entry: e.id } },
        h('th', { scope: 'row' }, when(e.created_at)),
        h('td', {}, names[e.service_id] || String(e.service_id || '').slice(0, 8)),
        h('td', {}, e.operation.replace(/_/g, ' ')),
        h('td', {}, badge(e.status)),
        h('td', {}, e.device_id ? h('a', { href: `/console/conflicts?device=${e.device_id}` }, `${String(e.device_id).slice(0, 8)}…`) : '—'),
        h('td', {}, e.run_id ? h('a', { href: `/console/runs/${e.run_id}` }, `${String(e.run_id).slice(0, 8)}…`) : '—'),
        h('td', { class: 'details' }, h('code', {}, show(e.details)))));
      pages += 1;
      out.append(table(pages === 1 ? 'Sync log' : `Sync log, page ${pages}`, ['When', 'Service', 'Operation', 'Status', 'Device', 'Run', 'Details'], rows, { class: 'log', dataset: { page: pages } }));
    }
    if (!rows.length && !cursor) out.append(h('p', { class: 'muted empty' }, 'Nothing matches these filters.'));
    more.hidden = !next;
  }

  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    window.history.replaceState(null, '', `/console/history${filterQuery()}`);
    replace(out);
    cursors.length = 0;
    pages = 0;
    act(apply, 'Loading…', () => load(undefined), { what: 'Could not load the history' });
  });
  more.addEventListener('click', () => {
    cursors.push(next);
    act(more, 'Loading…', () => load(next), { what: 'Could not load older entries' });
  });

  const tabLink = (t, label) => h('a', {
    href: `/console/history${qs({ tab: t, service: service.value })}`,
    class: `tab${t === tab ? ' active' : ''}`,
    'aria-current': t === tab ? 'page' : null,
  }, label);

  replace(main,
    h('h1', {}, 'History'),
    h('nav', { class: 'tabs', 'aria-label': 'History views' }, tabLink('runs', 'Sync runs'), tabLink('log', 'Sync log')),
    filters, out, more);
  await load(undefined);
  return undefined;
}

/** One run: its panel (polled while it is active), cancel, and its details. */
export async function run(main, params) {
  let timer = null;
  let stopped = false;
  async function draw() {
    const r = await get(`/sync-runs/${params.id}`);
    const items = await loadServices();
    const svc = items.find((s) => s.id === r.service_id);
    replace(main,
      h('p', { class: 'crumbs' }, h('a', { href: '/console/history' }, 'History'), ' › run'),
      h('h1', {}, `${r.dry_run ? 'Dry run' : 'Run'} of ${svc ? svc.name : 'a deleted service'}`),
      runPanel(r, {
        onCancel: async (btn) => {
          const res = await act(btn, 'Cancelling…', () => post(`/sync-runs/${r.id}/cancel`), { okTitle: 'Run cancelled', what: 'Cancel failed' });
          if (res) draw();
        },
      }),
      detailsTable(r),
      h('p', {}, h('a', { href: `/console/history${qs({ tab: 'log', service: r.service_id })}` }, 'Sync log of this service')));
    if (!isTerminal(r) && !stopped) timer = setTimeout(() => draw().catch(() => {}), 1000);
  }
  await draw();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
