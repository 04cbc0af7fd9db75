// tokens.js — the session's tokens (docs/accounts.md, Sessions and tokens): the access token
// lives in memory only; the single-use refresh token and the org slug live in localStorage so a
// reload signs in silently. One refresh at a time — within this tab by sharing the promise,
// across tabs with the Web Locks API (or a localStorage lock where it is missing) — because
// presenting a rotated refresh token more than 30 s late ends the whole session (refresh_reused).
//
// Each tab belongs to one login session: the one it signed in with, or the one it found stored
// at load. Tabs of one session share its stored refresh token; a tab never uses, overwrites or
// removes a token of another session (another sign-in in this browser, perhaps another account).

import { ApiError, isTransient, requestJson } from './http.js';
import { readItem, removeItem, writeItem } from './storage.js';

const REFRESH_KEY = 'threadspace.refresh';
const ORG_KEY = 'threadspace.org';
const LOCK_KEY = 'threadspace.refresh-lock';
const REFRESH_MARGIN_MS = 60_000; // refresh this long before the access token expires
const MIN_VALIDITY_MS = 5_000; // a token closer than this to expiry is refreshed before use
const LOCK_WAIT_MS = 25_000; // give up waiting for another tab's refresh after this long
// A storage lock older than this is stale (its tab died); longer than a request may take (15 s).
const LOCK_HOLD_MS = 20_000;
const LOCK_CONFIRM_MS = 50; // how long to wait before reading a just-written lock back
const SESSION_GONE = new Set(['refresh_refused', 'refresh_reused']);

let access = null; // { token, expiresAt }
// This tab's login session: answer.session_id, also the "<session>." prefix of its refresh tokens.
let mySession = null;
// Our refresh token when storage refused to keep it (or now holds another session's).
let memoryRefresh = null;
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

/** "31.Qm9…" → "31" (docs/api.md: refresh tokens are `<session>.<secret>`). */
function sessionOf(token) {
  const dot = typeof token === 'string' ? token.indexOf('.') : -1;
  return dot > 0 ? token.slice(0, dot) : null;
}

/**
 * Takes a token answer (login, refresh): keeps both tokens and schedules the next refresh.
 * With `store` false the refresh token stays in memory only (storage holds another's now).
 */
export function accept(answer, { store = true } = {}) {
  const lifetimeMs = Math.max(0, Number(answer.expires_in) || 0) * 1000;
  access = { token: answer.access_token, expiresAt: Date.now() + lifetimeMs };
  mySession = answer.session_id != null ? String(answer.session_id) : sessionOf(answer.refresh_token);
  // When storage refuses the token, this tab still needs it: the next refresh presents the copy.
  memoryRefresh = store && writeItem(REFRESH_KEY, answer.refresh_token) ? null : answer.refresh_token;
  schedule(lifetimeMs);
}

/** Forgets the tokens (sign-out, ended session). The org slug stays for the login form. */
export function clear() {
  generation += 1;
  access = null;
  clearTimeout(timer);
  // Only our own session's token: another tab may have signed in since, and its token is not ours.
  if (mySession !== null && sessionOf(readItem(REFRESH_KEY)) === mySession) removeItem(REFRESH_KEY);
  mySession = null;
  memoryRefresh = null;
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
    if (navigator.locks?.request) await withWebLock();
    else await withStorageLock(rotate);
  } catch (error) {
    if (isSessionGone(error)) {
      clear();
      endedHandler();
    }
    throw error;
  }
}

const lockTimeout = () => new ApiError(0, 'lock_timeout', 'Another tab is refreshing the session. Try again.');

async function withWebLock() {
  try {
    await navigator.locks.request('threadspace.refresh', { signal: AbortSignal.timeout?.(LOCK_WAIT_MS) }, rotate);
  } catch (error) {
    // Waited too long for the lock (the signal only aborts the wait, never a held lock).
    if (error?.name === 'TimeoutError' || error?.name === 'AbortError') throw lockTimeout();
    throw error;
  }
}

/**
 * Where the Web Locks API is missing (plain http on a LAN address is not a secure context), a
 * lock in localStorage: write {owner, until}, wait a moment, and read it back — another tab that
 * wrote at the same time has either overwritten ours (we wait) or been overwritten (it waits).
 * A lock whose tab died expires after LOCK_HOLD_MS.
 */
async function withStorageLock(run) {
  const owner = `${Date.now()}-${Math.random()}`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const held = readLock();
    if (!held || held.until < Date.now()) {
      // No storage at all: no other tab shares our token either, so there is nothing to serialize.
      if (!writeItem(LOCK_KEY, JSON.stringify({ owner, until: Date.now() + LOCK_HOLD_MS }))) return run();
      await sleep(LOCK_CONFIRM_MS);
      if (readLock()?.owner === owner) break;
    }
    if (Date.now() >= deadline) throw lockTimeout();
    await sleep(100 + Math.random() * 100);
  }
  try {
    return await run();
  } finally {
    if (readLock()?.owner === owner) removeItem(LOCK_KEY);
  }
}

function readLock() {
  try {
    const lock = JSON.parse(readItem(LOCK_KEY) || 'null');
    return lock && typeof lock.owner === 'string' && Number.isFinite(lock.until) ? lock : null;
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Reads the refresh token inside the lock: another tab of this session may just have rotated
// it, and its successor (not ours) is the one to present.
async function rotate() {
  const started = generation;
  const fromMemory = memoryRefresh !== null;
  const token = memoryRefresh ?? readItem(REFRESH_KEY);
  if (!token) throw new ApiError(401, 'refresh_refused', 'There is no session to refresh.');
  // Storage holds another session's token (a sign-in in another tab): ours is gone, and that
  // one is not ours to present. End this tab's session and leave that token alone.
  if (mySession !== null && sessionOf(token) !== mySession) {
    throw new ApiError(401, 'refresh_refused', 'Signed in again in another tab.');
  }
  let answer;
  try {
    answer = await requestJson('POST', '/v1/auth/refresh', { body: { refresh_token: token } });
  } catch (error) {
    // A refused token is of no use to anyone (this tab may not even have adopted it yet, at
    // load): forget it, unless another sign-in replaced it meanwhile.
    if (isSessionGone(error) && readItem(REFRESH_KEY) === token) removeItem(REFRESH_KEY);
    throw error;
  }
  if (started !== generation) throw new ApiError(401, 'signed_out', 'Signed out meanwhile.');
  // Store the successor only over the token presented (or, when storage had refused it, over
  // nothing or an older token of this session): anything else was written by another sign-in.
  const stored = readItem(REFRESH_KEY);
  const mine = stored === token || (fromMemory && (stored === null || sessionOf(stored) === mySession));
  accept(answer, { store: mine });
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
