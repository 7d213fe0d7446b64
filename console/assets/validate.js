// golioth-sync console: client-side validation of a service, mirroring the API's own checks
// (shared/src/service.rs: ServiceWrite::parse, ServiceConfig::parse). The server stays the
// authority; this only reports the same problems before a round trip, per field.

export const LIMITS = {
  name: 100,
  projectId: 64,
  url: 200,
  statePath: 128,
  secret: 256,
  webhookSecretMin: 16,
  header: 64,
  intervalMin: 60,
  intervalMax: 604800,
  thresholdMin: 30,
  thresholdMax: 604800,
};

export const DIRECTIONS = ['import', 'export', 'bidirectional'];
export const POLICIES = ['manual', 'local_wins', 'remote_wins', 'newest_wins'];
export const ON_REMOTE_DELETE = ['soft_delete_local', 'unlink', 'ignore'];
export const ON_LOCAL_DELETE = ['unlink', 'delete_remote'];
export const WEBHOOK_AUTH = ['token', 'hmac', 'standard'];
export const SYNC_FIELDS = [
  ['name', 'Name'],
  ['enabled', 'Enabled'],
  ['tags', 'Tags'],
  ['hardware_ids', 'Hardware ids'],
  ['blueprint', 'Blueprint'],
  ['cohort', 'Cohort'],
  ['status', 'Status (last seen, online)'],
  ['firmware', 'Firmware / metadata'],
  ['battery', 'Battery'],
  ['location', 'Location'],
  ['signal', 'Signal'],
];
export const STATE_PATHS = ['battery', 'location', 'signal'];

const PROJECT_ID = /^[A-Za-z0-9_-]+$/;
const STATE_PATH = /^[A-Za-z0-9/_.-]+$/;
// An HTTP header name token (RFC 9110 tchar).
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function intIn(v, min, max) {
  return Number.isInteger(v) && v >= min && v <= max;
}

/**
 * Validate a write body as the API would. `body` is what will be sent; `creating` requires name
 * and config. Returns {field path: message}; empty when valid.
 */
export function validateService(body, creating) {
  const errors = {};
  if (body.name !== undefined) {
    const n = String(body.name).trim();
    if (!n || [...n].length > LIMITS.name) errors.name = `name must be 1-${LIMITS.name} characters`;
  } else if (creating) errors.name = 'name is required';
  const c = body.config;
  if (c === undefined) {
    if (creating) errors['config.project_id'] = 'project_id is required';
  } else {
    const p = c.project_id || '';
    if (!p || p.length > LIMITS.projectId || !PROJECT_ID.test(p)) {
      errors['config.project_id'] = `project_id must be 1-${LIMITS.projectId} characters of [A-Za-z0-9_-]`;
    }
    if (c.base_url !== undefined) {
      const u = c.base_url;
      let ok = u.length <= LIMITS.url;
      try {
        const parsed = new URL(u);
        ok = ok && (parsed.protocol === 'https:' || parsed.protocol === 'http:');
      } catch {
        ok = false;
      }
      if (!ok) errors['config.base_url'] = 'base_url must be an http(s) URL of at most 200 characters (and one the deployment allows)';
    }
    if (c.online_threshold_seconds !== undefined && !intIn(c.online_threshold_seconds, LIMITS.thresholdMin, LIMITS.thresholdMax)) {
      errors['config.online_threshold_seconds'] = `online_threshold_seconds must be between ${LIMITS.thresholdMin} and ${LIMITS.thresholdMax}`;
    }
    for (const k of STATE_PATHS) {
      const v = c.state_paths && c.state_paths[k];
      if (v !== undefined && v !== null) {
        if (!v || v.length > LIMITS.statePath || v.startsWith('/') || v.includes('..') || !STATE_PATH.test(v)) {
          errors[`config.state_paths.${k}`] = `state_paths.${k} must be a relative path of at most ${LIMITS.statePath} characters of [A-Za-z0-9/_.-]`;
        }
      }
    }
    const hn = c.webhook && c.webhook.header_name;
    if (hn !== undefined && (!hn || hn.length > LIMITS.header || !HEADER.test(hn) || hn.toLowerCase().startsWith('ce-'))) {
      errors['config.webhook.header_name'] = 'webhook.header_name must be a valid HTTP header name (not a Ce- header)';
    }
    if (c.sync_direction !== undefined && !DIRECTIONS.includes(c.sync_direction)) errors['config.sync_direction'] = 'invalid direction';
    if (c.conflict_resolution !== undefined && !POLICIES.includes(c.conflict_resolution)) errors['config.conflict_resolution'] = 'invalid policy';
  }
  if (body.sync_interval_seconds !== undefined && !intIn(body.sync_interval_seconds, LIMITS.intervalMin, LIMITS.intervalMax)) {
    errors.sync_interval_seconds = `sync_interval_seconds must be an integer between ${LIMITS.intervalMin} and ${LIMITS.intervalMax}`;
  }
  for (const [k, min] of [['api_key', 1], ['webhook_secret', LIMITS.webhookSecretMin], ['webhook_secret_previous', LIMITS.webhookSecretMin]]) {
    const v = body[k];
    if (typeof v === 'string') {
      const len = [...v].length;
      if (len < min || len > LIMITS.secret || CONTROL.test(v)) errors[k] = `${k} must be ${min}-${LIMITS.secret} printable characters`;
    }
  }
  return errors;
}

/** A custom resolution value for a conflict field, parsed from what a person typed. */
export function parseCustom(field, text) {
  const t = text.trim();
  switch (field) {
    case 'enabled':
      if (/^(true|yes|on|1)$/i.test(t)) return { value: true };
      if (/^(false|no|off|0)$/i.test(t)) return { value: false };
      return { error: 'enabled is true or false' };
    case 'tags':
    case 'hardware_ids':
      if (t.startsWith('[')) {
        try {
          const v = JSON.parse(t);
          if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return { value: v };
        } catch { /* fall through */ }
        return { error: `${field} is a list of strings (comma-separated or a JSON array)` };
      }
      return { value: t ? t.split(',').map((s) => s.trim()).filter(Boolean) : [] };
    case 'blueprint_id':
    case 'cohort_id':
      if (!t || t === 'null') return { value: null };
      return { value: t };
    case 'name':
      if (!t) return { error: 'a name cannot be empty' };
      return { value: t };
    default:
      try {
        return { value: JSON.parse(t) };
      } catch {
        return { value: t };
      }
  }
}
