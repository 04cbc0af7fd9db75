// format.js — plain-text formatting: safe linkify, times and day labels, UTF-8 byte lengths,
// client message ids. Nothing here ever parses HTML.

const encoder = new TextEncoder();

/** The body's size as the gateway counts it (`limits.max_body_bytes` is in UTF-8 bytes). */
export function utf8Length(text) {
  return encoder.encode(text).length;
}

// Candidate URLs: http(s):// up to whitespace or characters that never belong to a bare URL.
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?'")\]}>]$/;
const CLOSERS = { ')': '(', ']': '[', '}': '{' };

/**
 * Splits plain text into text nodes and <a> elements for http:// and https:// URLs only.
 * A link's href is set only after the URL parser confirms the protocol, so text such as
 * "javascript:" can never become a link.
 */
export function linkify(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const candidate = trimTrailing(match[0]);
    const href = safeHref(candidate);
    if (!href) continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    nodes.push(linkElement(href, candidate));
    last = match.index + candidate.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function linkElement(href, label) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = label;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  return a;
}

// "See https://x.test/a." → the final "." is prose, not URL; a ")" stays when it closes a "("
// inside the URL (https://en.wikipedia.org/wiki/Rust_(language)).
function trimTrailing(url) {
  let result = url;
  while (TRAILING.test(result)) {
    const last = result.at(-1);
    const opener = CLOSERS[last];
    if (opener && count(result, opener) >= count(result, last)) break;
    result = result.slice(0, -1);
  }
  return result;
}

function count(text, ch) {
  return text.split(ch).length - 1;
}

/**
 * The normalized href if `text` parses as an http: or https: URL, else null. With `base`,
 * relative URLs ("#/c/1") are resolved against it first.
 */
export function safeHref(text, base = undefined) {
  try {
    const url = new URL(text, base);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'long', year: 'numeric', month: 'long', day: 'numeric',
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export const formatTime = (ts) => timeFormat.format(new Date(ts));
export const formatDateTime = (ts) => dateTimeFormat.format(new Date(ts));
export const isoTime = (ts) => new Date(ts).toISOString();

/** A local calendar day, e.g. "2026-11-3": the key of a day separator. */
export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** "Today", "Yesterday", or the full date. */
export function dayLabel(ts, now = Date.now()) {
  const key = dayKey(ts);
  if (key === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(yesterday.getDate() - 1);
  if (key === dayKey(yesterday.getTime())) return 'Yesterday';
  return dateFormat.format(new Date(ts));
}

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

/** A fresh client_msg_id: "w" + 20 random characters of [A-Za-z0-9_-] (120 bits). */
export function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  // 64 symbols divide 256 evenly, so `& 63` keeps every symbol equally likely.
  return `w${Array.from(bytes, (b) => ID_ALPHABET[b & 63]).join('')}`;
}

/** "Ada", "Ada and Bob", "Ada, Bob and Cy". */
export function joinNames(names) {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}
