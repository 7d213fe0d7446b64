// golioth-sync console: the session (bearer JWT and organization in sessionStorage, taken from
// the URL fragment once) and the JSON API client (problem+json errors as ApiError).

const TOKEN = 'golioth-sync.token';
const ORG = 'golioth-sync.org';

/** An API failure: the problem+json fields (title, detail, status) plus any extensions. */
export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || 'request failed');
    Object.assign(this, problem);
    this.title = problem.title || 'Request failed';
    this.status = problem.status || 0;
  }
}

/** Decode a JWT's claims without verifying it (the server verifies; this only names the user). */
export function claims(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const json = decodeURIComponent(Array.from(atob(b64), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''));
    const c = JSON.parse(json);
    return c && typeof c === 'object' ? c : null;
  } catch {
    return null;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export function isUuid(s) {
  return UUID.test(String(s || '').trim());
}

/**
 * Take `#token=…&org=…` from the address bar into sessionStorage and remove the fragment (it
 * never reaches a server, and is not left in the history either).
 */
export function adoptFragment() {
  const hash = window.location.hash.replace(/^#/, '');
  if (!hash) return false;
  const p = new URLSearchParams(hash);
  const token = p.get('token');
  const org = p.get('org');
  if (!token && !org) return false;
  if (token) sessionStorage.setItem(TOKEN, token.trim());
  if (org) sessionStorage.setItem(ORG, org.trim());
  history.replaceState(history.state, '', window.location.pathname + window.location.search);
  return true;
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN) || ''; },
  get org() { return sessionStorage.getItem(ORG) || ''; },
  set(token, org) {
    sessionStorage.setItem(TOKEN, token.trim());
    sessionStorage.setItem(ORG, org.trim());
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
  },
  forget() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(ORG);
  },
  /** Why the stored token cannot be used, or '' when it looks usable. */
  problem() {
    const t = this.token;
    if (!t) return '';
    const c = claims(t);
    if (!c) return 'The token is not a JWT (three base64url parts). Paste the bearer token again.';
    if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
      return `The token expired at ${new Date(c.exp * 1000).toISOString()}. Ask for a new one (cargo xtask up prints one) and sign in again.`;
    }
    return '';
  },
};

/** Called when the server refuses the token (401): the app shows the sign-in screen. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

/** Call the API: `path` is relative to the organization (`/services`) unless it starts with `//`. */
export async function api(method, path, body, { signal } = {}) {
  const url = path.startsWith('//') ? path.slice(1) : `/api/v1/orgs/${encodeURIComponent(session.org)}${path}`;
  const headers = { accept: 'application/json, application/problem+json' };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError({ title: 'Network error', detail: `The server could not be reached (${e.message}).` });
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const problem = data && typeof data === 'object' ? data : { title: resp.statusText || `HTTP ${resp.status}` };
    problem.status = problem.status || resp.status;
    if (resp.status === 401) {
      problem.title = problem.title || 'Unauthorized';
      onUnauthorized(problem);
    }
    throw new ApiError(problem);
  }
  return { status: resp.status, data };
}

export const get = (path, opts) => api('GET', path, undefined, opts).then((r) => r.data);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path, body) => api('DELETE', path, body);

/** `?a=1&b=2` from an object, skipping empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

let meCache = null;
/** GET /api/v1/me: the signed-in user and their organizations (cached until sign-out or switch). */
export async function me(fresh = false) {
  if (!meCache || fresh) {
    meCache = get('//api/v1/me').catch((e) => {
      meCache = null;
      throw e;
    });
  }
  return meCache;
}
export function forgetMe() {
  meCache = null;
}

let servicesCache = null;
/** The organization's services (cached for the session of one screen; `fresh` reloads). */
export async function services(fresh = false) {
  if (!servicesCache || fresh) {
    servicesCache = get('/services').then((d) => d.items || []).catch((e) => {
      servicesCache = null;
      throw e;
    });
  }
  return servicesCache;
}
export function forgetServices() {
  servicesCache = null;
}
