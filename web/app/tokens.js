// tokens.js — the session's tokens (docs/accounts.md, Sessions and tokens): the access token
// lives in memory only; the single-use refresh token and the org slug live in localStorage so a
// reload signs in silently. One refresh at a time — within this tab by sharing the promise,
// across tabs with the Web Locks API — because presenting a rotated refresh token more than
// 30 s late ends the whole session (refresh_reused).

import { ApiError, isTransient, requestJson } from './http.js';
import { readItem, removeItem, writeItem } from './storage.js';

const REFRESH_KEY = 'threadspace.refresh';
const ORG_KEY = 'threadspace.org';
const REFRESH_MARGIN_MS = 60_000; // refresh this long before the access token expires
const MIN_VALIDITY_MS = 5_000; // a token closer than this to expiry is refreshed before use
const SESSION_GONE = new Set(['refresh_refused', 'refresh_reused']);

let access = null; // { token, expiresAt }
let inFlight = null;
let timer = 0;
let retryDelay = 0;
let endedHandler = () => {};
let generation = 0; // bumped by clear(): a refresh answer arriving after sign-out is dropped

/** True for the answers that mean the session is over: sign in again. */
export function isSessionGone(error) {
  return error instanceof ApiError && SESSION_GONE.has(error.code);
}

/** Called once when a refresh is refused: the session ended elsewhere (or was stolen). */
export function onSessionEnded(handler) {
  endedHandler = handler;
}

export const hasStoredSession = () => Boolean(readItem(REFRESH_KEY));
export const storedOrg = () => readItem(ORG_KEY) || '';
export const rememberOrg = (slug) => writeItem(ORG_KEY, slug);
export const currentToken = () => access?.token ?? null;

/** Takes a token answer (login, refresh): keeps both tokens and schedules the next refresh. */
export function accept(answer) {
  const lifetimeMs = Math.max(0, Number(answer.expires_in) || 0) * 1000;
  access = { token: answer.access_token, expiresAt: Date.now() + lifetimeMs };
  writeItem(REFRESH_KEY, answer.refresh_token);
  schedule(lifetimeMs);
}

/** Forgets the tokens (sign-out, ended session). The org slug stays for the login form. */
export function clear() {
  generation += 1;
  access = null;
  clearTimeout(timer);
  removeItem(REFRESH_KEY);
}

/** A usable access token, refreshing first when it is missing or about to expire. */
export async function accessToken() {
  if (access && access.expiresAt - Date.now() > MIN_VALIDITY_MS) return access.token;
  await refresh();
  return currentToken();
}

/** Trades the refresh token for new tokens; concurrent callers share one request. */
export function refresh() {
  if (!inFlight) inFlight = exchange().finally(() => { inFlight = null; });
  return inFlight;
}

async function exchange() {
  try {
    if (navigator.locks?.request) await navigator.locks.request('threadspace.refresh', rotate);
    else await rotate();
  } catch (error) {
    if (isSessionGone(error)) {
      clear();
      endedHandler();
    }
    throw error;
  }
}

// Reads the refresh token inside the lock: another tab may just have rotated it, and its
// successor (not ours) is the one to present.
async function rotate() {
  const started = generation;
  const token = readItem(REFRESH_KEY);
  if (!token) throw new ApiError(401, 'refresh_refused', 'There is no session to refresh.');
  const answer = await requestJson('POST', '/v1/auth/refresh', { body: { refresh_token: token } });
  if (started !== generation) throw new ApiError(401, 'signed_out', 'Signed out meanwhile.');
  accept(answer);
}

function schedule(lifetimeMs) {
  clearTimeout(timer);
  timer = setTimeout(refreshInBackground, Math.max(MIN_VALIDITY_MS, lifetimeMs - REFRESH_MARGIN_MS));
}

async function refreshInBackground() {
  try {
    await refresh();
    retryDelay = 0;
  } catch (error) {
    if (isSessionGone(error)) return;
    // A network blip or a 503: try again soon; the old access token may still be valid.
    retryDelay = isTransient(error) ? Math.min(60_000, retryDelay ? retryDelay * 2 : 2_000) : 30_000;
    timer = setTimeout(refreshInBackground, retryDelay);
  }
}
