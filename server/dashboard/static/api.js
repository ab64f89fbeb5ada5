// Every request of the page goes through request(): one place to add the API key and to
// tell reads from writes. URLs are relative to the page, so the dashboard also works behind
// a proxy that adds a path prefix.

const KEY_STORAGE = "beamsteer.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return typeof detail === "string" ? detail : `HTTP ${status}`;
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export function url(path) {
  return new URL(path, document.baseURI).href;
}

// write: true for anything that changes state. Views that only read never pass it, and a
// 401/403 on a write turns the page read-only (see onReadOnly).
let readOnlyListeners = [];
export function onReadOnly(fn) {
  readOnlyListeners.push(fn);
}

// A 401 means the server has keys and ours is missing or no longer valid: ask for one.
let authListeners = [];
export function onAuthNeeded(fn) {
  authListeners.push(fn);
}
export function authNeeded(why) {
  authListeners.forEach((f) => f(why));
}

export async function request(path, { method = "GET", body, write = false, raw = false } = {}) {
  const headers = { accept: raw ? "*/*" : "application/json" };
  const key = apiKey();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(url(path), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", // live data: never an earlier answer from the HTTP cache
  });
  if (!r.ok) {
    let payload = null;
    try { payload = await r.json(); } catch { /* not JSON */ }
    if (r.status === 401) authNeeded(payload);
    else if (write && r.status === 403) readOnlyListeners.forEach((f) => f());
    throw new ApiError(r.status, payload);
  }
  if (raw) return r;
  return r.status === 204 ? null : r.json();
}

const exp = (id) => `api/v1/experiments/${encodeURIComponent(id)}`;

export const api = {
  health: () => request("health"),
  metrics: () => request("metrics", { raw: true }).then((r) => r.text()),
  models: () => request("api/v1/models").then((r) => r.models),
  experiments: () => request("api/v1/experiments").then((r) => r.experiments),
  experiment: (id) => request(exp(id)),
  measurements: (id, after = 0, limit = 10000) =>
    request(`${exp(id)}/measurements?after=${after}&limit=${limit}`),
  suggestions: (id) => request(`${exp(id)}/suggestions`).then((r) => r.suggestions),
  pending: (id) => request(`${exp(id)}/suggestions?status=pending`).then((r) => r.suggestions),
  // The posterior is a read even where it is a POST (a grid with slice values).
  posteriorGrid: (id, n) => request(`${exp(id)}/posterior?n=${n}`),
  posterior: (id, query) => request(`${exp(id)}/posterior`, { method: "POST", body: query }),
  csv: (id) => request(`${exp(id)}/measurements?format=csv`, { raw: true }).then((r) => r.blob()),
  // writes
  create: (spec) => request("api/v1/experiments", { method: "POST", body: spec, write: true }),
  setStatus: (id, status) =>
    request(exp(id), { method: "PATCH", body: { status }, write: true }),
};

// A browser cannot set headers on a websocket: the key goes in the query (the server masks
// it in its logs).
export function eventsUrl(id) {
  const u = new URL(`${exp(id)}/events`, document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) u.searchParams.set("api_key", key);
  return u.href;
}
