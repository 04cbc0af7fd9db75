// config.js — reads /app/config.json: the gateway WebSocket URLs (absolute ws(s):// or a path
// on this origin) and how long without input counts as idle. localStorage
// 'threadspace.idle_after_ms' overrides the idle delay (for tests).

import { readItem } from './storage.js';

const DEFAULT_IDLE_MS = 60_000;

export async function loadConfig() {
  let raw = {};
  try {
    const response = await fetch('/app/config.json', { cache: 'no-store' });
    if (response.ok) raw = await response.json();
  } catch {
    // Unreachable or malformed: fall back to the same-origin gateway below.
  }
  const listed = Array.isArray(raw?.gateways) ? raw.gateways : [];
  const gateways = listed.map(toWebSocketUrl).filter(Boolean);
  if (gateways.length === 0) gateways.push(toWebSocketUrl('/v1/ws'));
  return { gateways, idleAfterMs: idleAfter(raw?.idle_after_ms) };
}

function idleAfter(configured) {
  const override = Number(readItem('threadspace.idle_after_ms'));
  if (Number.isFinite(override) && override > 0) return override;
  const value = Number(configured);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_IDLE_MS;
}

/** Resolves a gateway URL against this page: "/v1/ws" on https://x becomes wss://x/v1/ws. */
export function toWebSocketUrl(value) {
  if (typeof value !== 'string' || !value) return null;
  try {
    const url = new URL(value, window.location.href);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    return url.protocol === 'ws:' || url.protocol === 'wss:' ? url.href : null;
  } catch {
    return null;
  }
}
