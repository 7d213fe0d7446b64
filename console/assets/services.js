// golioth-sync console: the services screens — the list (last sync, success rate, pending
// conflicts from each service's stats) and the create / edit form with every config option,
// write-only secrets, "test connection", the webhook URL with a ready Pipeline YAML, and
// deleting a service after a confirmation in the page.

import { ApiError, del, forgetServices, get, patch, post } from './api.js';
import { act, badge, copy, field, go, h, notify, replace, setFieldError, table, when } from './dom.js';
import {
  DIRECTIONS, LIMITS, ON_LOCAL_DELETE, ON_REMOTE_DELETE, POLICIES, STATE_PATHS, SYNC_FIELDS, WEBHOOK_AUTH, validateService,
} from './validate.js';

function rate(stats) {
  const r = stats && stats.success_rate;
  if (r === null || r === undefined) return '—';
  return `${Math.round(r * 1000) / 10}%`;
}

/** The services list. */
export async function list(main) {
  const items = (await get('/services')).items || [];
  forgetServices();
  const stats = await Promise.all(items.map((s) => get(`/services/${s.id}/stats`).catch(() => null)));
  const rows = items.map((s, i) => {
    const st = stats[i] || {};
    const runs = st.runs || {};
    const last = st.last_sync || {};
    return h('tr', { dataset: { service: s.id } },
      h('th', { scope: 'row' }, h('a', { href: `/console/services/${s.id}` }, s.name)),
      h('td', {}, h('code', {}, s.config.project_id)),
      h('td', {}, s.is_active ? 'active' : 'inactive', s.sync_enabled ? ` · every ${s.sync_interval_seconds}s` : ''),
      h('td', {}, s.config.sync_direction || 'bidirectional'),
      h('td', { class: 'last-sync' }, badge(last.status || s.last_sync_status || 'never'), ' ', when(last.at || s.last_sync_at)),
      h('td', { class: 'rate' }, rate(st), h('small', { class: 'muted' }, ` of ${(runs.completed || 0) + (runs.completed_with_errors || 0) + (runs.failed || 0)} runs`)),
      h('td', {}, st.pending_conflicts
        ? h('a', { href: `/console/conflicts?service=${s.id}` }, `${st.pending_conflicts} pending`)
        : '0'),
      h('td', { class: 'row-actions' },
        h('a', { href: `/console/sync?service=${s.id}`, class: 'button small' }, 'Sync'),
        ' ',
        h('a', { href: `/console/history?service=${s.id}`, class: 'button small' }, 'History')));
  });
  replace(main,
    h('div', { class: 'title-row' },
      h('h1', {}, 'Services'),
      h('a', { href: '/console/services/new', class: 'button primary' }, 'New service')),
    items.length
      ? table('Services', ['Name', 'Project', 'Schedule', 'Direction', 'Last sync', 'Success rate (30 d)', 'Conflicts', 'Actions'], rows, { id: 'services-table' })
      : h('div', { class: 'empty' }, h('p', {}, 'No services yet. A service links this organization to one Golioth project.'),
        h('a', { href: '/console/services/new', class: 'button primary' }, 'Create the first service')));
}

function select(name, options, value) {
  return h('select', { name }, options.map((o) => h('option', { value: o, selected: o === value }, o.replace(/_/g, ' '))));
}

function secretStatus(set, last4) {
  if (!set) return 'not set';
  return last4 ? `set, …${last4}` : 'set';
}

function randomSecret() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The Pipeline YAML for a service (JSON data, or CBOR converted to JSON). */
export function pipelineYaml(url, cfg, cbor) {
  const wh = cfg.webhook || {};
  const header = (wh.header_name || 'x-webhook-token').toLowerCase();
  const auth = wh.auth || 'token';
  const lines = [
    'filter:',
    '  path: "*"',
    `  content_type: application/${cbor ? 'cbor' : 'json'}`,
    'steps:',
    '  - name: to-golioth-sync',
  ];
  if (cbor) lines.push('    transformer:', '      type: cbor-to-json', '      version: v1');
  lines.push('    destination:', '      type: webhook', '      version: v1', '      parameters:', `        url: ${url}`);
  if (auth === 'token') {
    lines.push('        headers:', `          ${header}: ${header === 'authorization' ? 'Bearer $WEBHOOK_TOKEN' : '$WEBHOOK_TOKEN'}`);
  }
  return `${lines.join('\n')}\n`;
}

function webhookSection(service) {
  const url = `${window.location.origin}${service.webhook_path}`;
  const cfg = service.config || {};
  const auth = (cfg.webhook && cfg.webhook.auth) || 'token';
  const urlBox = h('input', { type: 'text', readonly: true, value: url, id: 'webhook-url' });
  const yaml = (cbor) => {
    const text = pipelineYaml(url, cfg, cbor);
    const id = cbor ? 'pipeline-cbor' : 'pipeline-json';
    const pre = h('pre', { class: 'code-block', id, tabindex: '0', 'aria-labelledby': `${id}-h` }, text);
    return h('div', {},
      h('h3', { id: `${id}-h` }, cbor ? 'Pipeline YAML (CBOR data converted to JSON)' : 'Pipeline YAML (JSON data)'),
      pre,
      h('button', { type: 'button', id: `copy-${id}`, onclick: () => copy(text, pre) }, cbor ? 'Copy CBOR pipeline' : 'Copy JSON pipeline'));
  };
  return h('section', { class: 'card', 'aria-labelledby': 'webhook-h' },
    h('h2', { id: 'webhook-h' }, 'Golioth Pipeline'),
    h('p', {}, 'Golioth Pipelines deliver device data to this URL. ',
      auth === 'token'
        ? ['Create a Pipeline Secret named ', h('code', {}, 'WEBHOOK_TOKEN'), ' in Golioth (Credentials › Secrets) holding this service\'s webhook secret (',
          secretStatus(service.credentials.webhook_secret_set, service.credentials.webhook_secret_last4), ').']
        : `This service expects ${auth} signatures, which Golioth Pipelines do not send: use a signing relay in between.`),
    field('Webhook URL', urlBox),
    h('button', { type: 'button', id: 'copy-url', onclick: () => copy(url, urlBox) }, 'Copy URL'),
    yaml(false),
    yaml(true));
}

/** The create (no id) or edit form. */
export async function edit(main, params) {
  const creating = !params.id;
  const service = creating ? null : await get(`/services/${params.id}`);
  const cfg = service ? service.config : {};
  const fields = cfg.sync_fields || {};
  const paths = cfg.state_paths || {};
  const wh = cfg.webhook || {};
  const cred = service ? service.credentials : {};

  const c = {
    name: h('input', { type: 'text', name: 'name', required: true, maxlength: String(LIMITS.name), value: service ? service.name : '', autocomplete: 'off' }),
    project_id: h('input', { type: 'text', name: 'project_id', required: true, maxlength: String(LIMITS.projectId), value: cfg.project_id || '', autocomplete: 'off', spellcheck: 'false' }),
    base_url: h('input', { type: 'url', name: 'base_url', maxlength: String(LIMITS.url), value: cfg.base_url || '', placeholder: 'https://api.golioth.io', autocomplete: 'off' }),
    api_key: h('input', { type: 'password', name: 'api_key', autocomplete: 'new-password', maxlength: String(LIMITS.secret), placeholder: creating ? '' : secretStatus(cred.api_key_set, cred.api_key_last4) }),
    webhook_secret: h('input', { type: 'password', name: 'webhook_secret', autocomplete: 'new-password', maxlength: String(LIMITS.secret), placeholder: creating ? '' : secretStatus(cred.webhook_secret_set, cred.webhook_secret_last4) }),
    clear_previous: h('input', { type: 'checkbox', name: 'clear_previous' }),
    is_active: h('input', { type: 'checkbox', name: 'is_active', checked: service ? service.is_active : true }),
    sync_enabled: h('input', { type: 'checkbox', name: 'sync_enabled', checked: service ? service.sync_enabled : false }),
    sync_interval_seconds: h('input', { type: 'number', name: 'sync_interval_seconds', min: String(LIMITS.intervalMin), max: String(LIMITS.intervalMax), step: '1', value: String(service ? service.sync_interval_seconds : 3600) }),
    sync_direction: select('sync_direction', DIRECTIONS, cfg.sync_direction || 'bidirectional'),
    conflict_resolution: select('conflict_resolution', POLICIES, cfg.conflict_resolution || 'manual'),
    match_by_name: h('input', { type: 'checkbox', name: 'match_by_name', checked: !!cfg.match_by_name }),
    on_remote_delete: select('on_remote_delete', ON_REMOTE_DELETE, cfg.on_remote_delete || 'soft_delete_local'),
    on_local_delete: select('on_local_delete', ON_LOCAL_DELETE, cfg.on_local_delete || 'unlink'),
    online_threshold_seconds: h('input', { type: 'number', name: 'online_threshold_seconds', min: String(LIMITS.thresholdMin), max: String(LIMITS.thresholdMax), step: '1', value: String(cfg.online_threshold_seconds || 600) }),
    webhook_auth: select('webhook_auth', WEBHOOK_AUTH, wh.auth || 'token'),
    header_name: h('input', { type: 'text', name: 'header_name', maxlength: String(LIMITS.header), value: wh.header_name || 'x-webhook-token', autocomplete: 'off', spellcheck: 'false' }),
    require_timestamp: h('input', { type: 'checkbox', name: 'require_timestamp', checked: !!wh.require_timestamp }),
    create_credentials: h('input', { type: 'checkbox', name: 'create_credentials', checked: !!cfg.create_credentials }),
  };
  const fieldBoxes = Object.fromEntries(SYNC_FIELDS.map(([k]) => [k, h('input', { type: 'checkbox', name: `sync_fields.${k}`, checked: fields[k] !== false })]));
  const pathInputs = Object.fromEntries(STATE_PATHS.map((k) => [k, h('input', { type: 'text', name: `state_paths.${k}`, maxlength: String(LIMITS.statePath), value: paths[k] || '', placeholder: k === 'battery' ? 'power/battery' : '', spellcheck: 'false' })]));
  const controlFor = {
    name: c.name,
    'config.project_id': c.project_id,
    'config.base_url': c.base_url,
    'config.online_threshold_seconds': c.online_threshold_seconds,
    'config.webhook.header_name': c.header_name,
    sync_interval_seconds: c.sync_interval_seconds,
    api_key: c.api_key,
    webhook_secret: c.webhook_secret,
    ...Object.fromEntries(STATE_PATHS.map((k) => [`config.state_paths.${k}`, pathInputs[k]])),
  };

  const problemBox = h('div', { class: 'notice error inline', role: 'alert', hidden: true, id: 'form-problem' });
  const submit = h('button', { type: 'submit', class: 'primary' }, creating ? 'Create service' : 'Save changes');
  const generate = h('button', { type: 'button', class: 'small', onclick: () => { c.webhook_secret.type = 'text'; c.webhook_secret.value = randomSecret(); c.webhook_secret.focus(); } }, 'Generate a secret');

  function body() {
    const int = (el) => (el.value.trim() === '' ? NaN : Number(el.value));
    const config = {
      project_id: c.project_id.value.trim(),
      sync_direction: c.sync_direction.value,
      conflict_resolution: c.conflict_resolution.value,
      sync_fields: Object.fromEntries(SYNC_FIELDS.map(([k]) => [k, fieldBoxes[k].checked])),
      match_by_name: c.match_by_name.checked,
      on_remote_delete: c.on_remote_delete.value,
      on_local_delete: c.on_local_delete.value,
      online_threshold_seconds: int(c.online_threshold_seconds),
      state_paths: Object.fromEntries(STATE_PATHS.map((k) => [k, pathInputs[k].value.trim() || null])),
      webhook: { auth: c.webhook_auth.value, header_name: c.header_name.value.trim(), require_timestamp: c.require_timestamp.checked },
      create_credentials: c.create_credentials.checked,
    };
    if (c.base_url.value.trim()) config.base_url = c.base_url.value.trim();
    const b = {
      name: c.name.value.trim(),
      config,
      is_active: c.is_active.checked,
      sync_enabled: c.sync_enabled.checked,
      sync_interval_seconds: int(c.sync_interval_seconds),
    };
    if (c.api_key.value) b.api_key = c.api_key.value;
    if (c.webhook_secret.value) b.webhook_secret = c.webhook_secret.value;
    if (c.clear_previous.checked) b.webhook_secret_previous = null;
    return b;
  }

  const form = h('form', { class: 'service-form', novalidate: true, id: 'service-form' },
    problemBox,
    h('fieldset', {}, h('legend', {}, 'Service'),
      field('Name', c.name),
      field('Golioth project id', c.project_id, 'Letters, digits, - and _ (at most 64).'),
      field('Golioth API base URL', c.base_url, 'Empty: the deployment\'s default. Must be one of the deployment\'s golioth_base_url values.'),
      field('Active', c.is_active, 'Inactive services sync only when forced.'),
      field('Scheduled syncs', c.sync_enabled),
      field('Interval (seconds)', c.sync_interval_seconds, `${LIMITS.intervalMin}–${LIMITS.intervalMax}.`)),
    h('fieldset', {}, h('legend', {}, 'Credentials (write-only)'),
      field('Golioth API key', c.api_key, creating ? 'A project API key. Stored encrypted; never shown again.' : `Currently ${secretStatus(cred.api_key_set, cred.api_key_last4)}. Leave empty to keep it.`),
      field('Webhook secret', c.webhook_secret, creating
        ? `At least ${LIMITS.webhookSecretMin} characters; the Pipeline sends it as a header.`
        : `Currently ${secretStatus(cred.webhook_secret_set, cred.webhook_secret_last4)}. A new one keeps the old one as the previous secret (still accepted) until cleared.`),
      generate,
      creating ? null : field(`Clear the previous webhook secret (${cred.webhook_secret_previous_set ? 'set' : 'not set'})`, c.clear_previous)),
    h('fieldset', {}, h('legend', {}, 'Sync'),
      field('Direction', c.sync_direction),
      field('Conflict policy', c.conflict_resolution, 'manual: a person resolves each conflict; the others decide automatically and keep both values.'),
      h('fieldset', { class: 'inner' }, h('legend', {}, 'Fields to sync'),
        h('div', { class: 'grid-checks' }, SYNC_FIELDS.map(([k, label]) => field(label, fieldBoxes[k])))),
      field('Match devices by exact unique name on the first sync', c.match_by_name),
      field('When a device is deleted in Golioth', c.on_remote_delete),
      field('When a device is deleted locally', c.on_local_delete),
      field('Online threshold (seconds)', c.online_threshold_seconds, `${LIMITS.thresholdMin}–${LIMITS.thresholdMax}; a device last seen within it is online.`),
      field('Create PSK credentials in Golioth for devices created there', c.create_credentials)),
    h('fieldset', {}, h('legend', {}, 'LightDB State paths'),
      STATE_PATHS.map((k) => field(`${k[0].toUpperCase()}${k.slice(1)} path`, pathInputs[k], 'Relative path, e.g. power/battery; empty: not mapped.'))),
    h('fieldset', {}, h('legend', {}, 'Webhook authentication'),
      field('Method', c.webhook_auth, 'token: a header holding the secret (Golioth Pipelines); hmac / standard: for signing relays.'),
      field('Token header', c.header_name),
      field('hmac: require X-Golioth-Timestamp', c.require_timestamp)),
    h('div', { class: 'actions' }, submit, ' ', h('a', { href: '/console/services', class: 'button' }, 'Cancel')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    problemBox.hidden = true;
    const b = body();
    const errors = validateService(b, creating);
    for (const [k, el] of Object.entries(controlFor)) setFieldError(el, errors[k] || null);
    const first = Object.keys(errors)[0];
    if (first) {
      notify('error', 'Check the form', Object.values(errors).join('; '));
      (controlFor[first] || c.name).focus();
      return;
    }
    const result = await act(submit, creating ? 'Creating…' : 'Saving…', async () => {
      try {
        return creating ? await post('/services', b) : await patch(`/services/${service.id}`, b);
      } catch (err) {
        if (err instanceof ApiError) {
          replace(problemBox, h('strong', {}, err.title), ' ', err.detail || '');
          problemBox.hidden = false;
        }
        throw err;
      }
    }, { okTitle: creating ? 'Service created' : 'Service saved', okDetail: (r) => r.data.name, what: creating ? 'Create failed' : 'Save failed' });
    if (result) {
      forgetServices();
      go(`/console/services/${result.data.id}`);
    }
  });

  const testBtn = service ? h('button', { type: 'button', id: 'test-connection' }, 'Test connection') : null;
  if (testBtn) {
    testBtn.addEventListener('click', () => act(testBtn, 'Testing…', () => post(`/services/${service.id}/test`), {
      okTitle: 'Connection OK',
      okDetail: (r) => `Golioth project ${r.data.project.name || r.data.project.id}`,
      what: 'Connection test failed',
    }));
  }
  const delBtn = service ? h('button', { type: 'button', class: 'danger', id: 'delete-service' }, 'Delete service…') : null;
  const confirmBox = h('div', { id: 'delete-confirm', role: 'group', 'aria-labelledby': 'delete-confirm-text', hidden: true });
  if (delBtn) {
    // Deleting asks first, in the page: the consequences, then a button that names the service.
    const yes = h('button', { type: 'button', class: 'danger', id: 'delete-yes' }, `Delete ${service.name}`);
    const no = h('button', { type: 'button', id: 'delete-no' }, 'Keep it');
    replace(confirmBox,
      h('p', { id: 'delete-confirm-text' }, h('strong', {}, `Delete ${service.name}?`),
        ' Its runs, sync log and conflicts go with it; the platform\'s devices stay. This cannot be undone.'),
      h('div', { class: 'actions' }, yes, ' ', no));
    delBtn.addEventListener('click', () => {
      confirmBox.hidden = false;
      delBtn.hidden = true;
      no.focus();
    });
    no.addEventListener('click', () => {
      confirmBox.hidden = true;
      delBtn.hidden = false;
      delBtn.focus();
    });
    yes.addEventListener('click', async () => {
      const ok = await act(yes, 'Deleting…', () => del(`/services/${service.id}`), { okTitle: 'Service deleted', okDetail: service.name, what: 'Delete failed' });
      if (ok) {
        forgetServices();
        go('/console/services');
      }
    });
  }

  replace(main,
    h('p', { class: 'crumbs' }, h('a', { href: '/console/services' }, 'Services'), ' › ', creating ? 'New' : service.name),
    h('div', { class: 'title-row' }, h('h1', {}, creating ? 'New service' : service.name),
      service ? h('div', { class: 'row-actions' }, testBtn, ' ', h('a', { class: 'button', href: `/console/sync?service=${service.id}` }, 'Sync…')) : null),
    service ? h('p', { class: 'muted' }, 'Last sync: ', badge(service.last_sync_status || 'never'), ' ', when(service.last_sync_at),
      service.next_sync_at ? [' · next: ', when(service.next_sync_at)] : null) : null,
    h('div', { class: 'columns' },
      h('section', { class: 'card', 'aria-label': 'Settings' }, form),
      service ? webhookSection(service) : null),
    service ? h('section', { class: 'card danger-zone', 'aria-labelledby': 'danger-h' }, h('h2', { id: 'danger-h' }, 'Danger zone'), delBtn, confirmBox) : null);
}
