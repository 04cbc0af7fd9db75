// dom.js — the only way this client builds DOM: createElement, properties and textContent.
// There is deliberately no helper that takes an HTML string: data never becomes markup.

import { safeHref } from './format.js';

// Props written as DOM properties rather than attributes (their attribute forms differ).
const PROPERTIES = new Set(['value', 'checked', 'selected', 'disabled', 'hidden', 'readOnly', 'required']);
// Props that would reintroduce markup (any "...HTML" property, srcdoc) or inline styles.
const refused = (key) => key === 'style' || key === 'srcdoc' || key.endsWith('HTML');
// Attributes that load or navigate: only http(s) URLs, or relative ones on this page, so a value
// from data can never be a javascript: (or data:) URL.
const URL_ATTRIBUTES = new Set(['href', 'src', 'action', 'formaction']);

/**
 * h('button', { class: 'x', type: 'button', onclick: fn, dataset: { user: 7 } }, 'text', child)
 * `text` sets textContent; `on<event>` adds a listener; null/undefined/false props are skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) applyProps(el, props);
  appendChildren(el, children);
  return el;
}

function applyProps(el, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (refused(key)) throw new Error(`dom.h: refusing the "${key}" property`);
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') setData(el, value);
    else if (key.startsWith('on')) {
      if (typeof value !== 'function') throw new Error(`dom.h: ${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) el[key] = value;
    else if (URL_ATTRIBUTES.has(key)) {
      // Kept as written ("#/c/1" stays relative); an unsafe URL is left out.
      if (safeHref(String(value), document.baseURI)) el.setAttribute(key, String(value));
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
}

function setData(el, data) {
  for (const [key, value] of Object.entries(data)) {
    if (value !== undefined && value !== null) el.dataset[key] = String(value);
  }
}

/** Appends strings (as text nodes), nodes and nested arrays; skips null/undefined/false. */
export function appendChildren(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
  return el;
}

/** Sets an element's text and hides it when the text is empty (error and notice lines). */
export function setMessage(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

/** A text that only screen readers announce. */
export function srOnly(text) {
  return h('span', { class: 'visually-hidden', text });
}

/** A labelled form field: <div class="field"><label for=id>…</label><input id=…></div>. */
export function field(id, label, props = {}, hint = null) {
  const { tag = 'input', ...inputProps } = props;
  const input = h(tag, { id, name: id, ...inputProps });
  const hintEl = hint ? h('p', { class: 'field-hint', id: `${id}-hint`, text: hint }) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return { input, el: h('div', { class: 'field' }, h('label', { for: id, text: label }), input, hintEl) };
}

/** A presence dot for one user; presence.js keeps every dot of that user current. */
export function presenceDot(userId, status) {
  return h(
    'span',
    { class: 'presence', dataset: { user: userId, status } },
    srOnly(status),
  );
}

/** Updates every presence dot of `userId` in the document. */
export function updatePresenceDots(userId, status) {
  const selector = `.presence[data-user="${CSS.escape(String(userId))}"]`;
  for (const dot of document.querySelectorAll(selector)) {
    if (dot.dataset.status === status) continue;
    dot.dataset.status = status;
    dot.replaceChildren(srOnly(status));
  }
}
