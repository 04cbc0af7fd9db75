// http.js — one JSON request function and the API's one error shape,
// {"error":{"code","message"}} (docs/api.md, Errors), as an ApiError.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0 when the server could not be reached
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429
  }
}

export const NETWORK_MESSAGE = 'Could not reach the server. Check your connection and try again.';
// A request the server never answers (a half-dead connection) fails after this long instead of
// hanging: a refresh stuck forever would also hold the refresh lock of every tab.
const TIMEOUT_MS = 15_000;
// An export document can be large (up to 256 MiB): its download may take longer.
const DOWNLOAD_TIMEOUT_MS = 10 * 60_000;

/**
 * Sends one request to the same-origin API. `query` values that are null/undefined are left
 * out. Resolves with the parsed JSON body (null for 202/204); rejects with an ApiError.
 */
export async function requestJson(method, path, { body, query, token } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = {
    method, headers, cache: 'no-store', credentials: 'same-origin', signal: AbortSignal.timeout?.(TIMEOUT_MS),
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'network', NETWORK_MESSAGE);
  }
  const payload = await readJson(response);
  if (response.ok) return payload;
  throw toError(response, payload);
}

/**
 * Fetches a document as a Blob (an export's archive): the same request as requestJson, with a
 * longer timeout, since an export can be large. An error answer is still the JSON error shape.
 */
export async function requestBlob(method, path, { token, timeoutMs = DOWNLOAD_TIMEOUT_MS } = {}) {
  const url = new URL(path, window.location.origin);
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  let blob = null;
  try {
    response = await fetch(url, {
      method, headers, cache: 'no-store', credentials: 'same-origin', signal: AbortSignal.timeout?.(timeoutMs),
    });
    if (response.ok) blob = await response.blob();
  } catch {
    throw new ApiError(0, 'network', NETWORK_MESSAGE);
  }
  if (blob) return blob;
  throw toError(response, await readJson(response));
}

async function readJson(response) {
  let text;
  try {
    text = await response.text();
  } catch {
    // The body was cut off (or timed out): an answer we did not get, not an empty one.
    throw new ApiError(0, 'network', NETWORK_MESSAGE);
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function toError(response, payload) {
  const error = payload && typeof payload === 'object' ? payload.error : null;
  const retryAfter = Number.parseInt(response.headers.get('Retry-After') || '', 10);
  return new ApiError(
    response.status,
    typeof error?.code === 'string' ? error.code : `http_${response.status}`,
    typeof error?.message === 'string' ? error.message : `The server answered ${response.status}.`,
    Number.isFinite(retryAfter) ? retryAfter : null,
  );
}

/** Whether retrying later may help: the network, 503 unavailable, 429. */
export function isTransient(error) {
  return error instanceof ApiError && (error.status === 0 || error.status === 503 || error.status === 429);
}
