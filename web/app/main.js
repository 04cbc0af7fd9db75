// main.js — boot and routing. Loads the config, signs in silently when a refresh token is
// stored, and switches between the signed-out screens (views/auth.js) and the signed-in app
// (chat.js) by hash route. <html data-state> says signed-out / connecting / ready.

import * as api from './api.js';
import { ChatApp } from './chat.js';
import { loadConfig } from './config.js';
import { h } from './dom.js';
import { isTransient } from './http.js';
import * as tokens from './tokens.js';
import { renderAuth } from './views/auth.js';

const AUTH_PATHS = new Set(['/login', '/new-org', '/invite', '/signup', '/reset']);
// Screens that consume a mailed token stay reachable while signed in (a second account).
const TOKEN_PATHS = new Set(['/invite', '/signup', '/reset']);
const SESSION_ENDED = 'Your session ended — sign in again.';

const root = document.getElementById('root');
let config = null;
let app = null; // the ChatApp while signed in
let notice = ''; // shown once on the next login screen
let booting = true;

function setState(state) {
  document.documentElement.dataset.state = state;
}

/** The hash route: "#/invite?token=x&org=acme" → { path: "/invite", params }. */
function parseRoute() {
  const raw = window.location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  return { path: path || '/', params: new URLSearchParams(q === -1 ? '' : raw.slice(q + 1)) };
}

function go(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function route() {
  if (booting) return;
  const current = parseRoute();
  const isAuth = AUTH_PATHS.has(current.path);
  if (app) {
    if (isAuth && !(TOKEN_PATHS.has(current.path) && current.params.get('token'))) {
      go('#/');
      return;
    }
    if (isAuth) showAuth(current);
    else {
      showApp();
      app.route(current);
    }
    return;
  }
  if (!isAuth) {
    go('#/login');
    return;
  }
  showAuth(current);
}

function showAuth(current) {
  if (!app) setState('signed-out');
  else app.detach();
  renderAuth(root, {
    ...current,
    notice: consumeNotice(),
    org: tokens.storedOrg(),
    signIn,
    toLogin: (text) => {
      notice = text;
      go('#/login');
    },
  });
  document.title = 'ThreadSpace';
}

function consumeNotice() {
  const text = notice;
  notice = '';
  return text;
}

function showApp() {
  if (app && !root.contains(app.element)) {
    root.replaceChildren(app.element);
    app.attached();
  }
}

/** A login answer arrived (login form, or an account just created): start the app. */
async function signIn(answer, orgSlug) {
  if (app) await endSession({ logout: true, navigate: false });
  tokens.accept(answer);
  tokens.rememberOrg(orgSlug);
  try {
    await startApp();
  } catch (error) {
    tokens.clear();
    setState('signed-out');
    throw error;
  }
  go('#/');
}

async function startApp() {
  setState('connecting');
  const me = await api.me();
  if (me?.org?.slug) tokens.rememberOrg(me.org.slug);
  app = new ChatApp({
    config,
    me,
    onSessionEnded: (text) => endSession({ notice: text }),
    onSignOut: () => endSession({ logout: true }),
  });
  app.start();
  showApp();
}

/**
 * Leaves the signed-in app. With `logout`, ends the session on the server first (the socket is
 * closed before, so the 4004 that follows is not mistaken for a session ended elsewhere).
 */
async function endSession({ logout = false, notice: text = '', navigate = true } = {}) {
  const current = app;
  app = null;
  if (current) {
    current.disconnect();
    if (logout) await api.logout().catch(() => { /* the session may be gone already */ });
    current.stop();
  }
  tokens.clear();
  setState('signed-out');
  notice = text;
  if (navigate) go('#/login');
}

// A refresh was refused (the session ended, or its refresh token was reused).
function sessionGone() {
  if (app) endSession({ notice: SESSION_ENDED });
}

/** Silent sign-in on reload; network trouble is retried, a refused session is not. */
async function resume() {
  setState('connecting');
  for (let delay = 1_000; ; delay = Math.min(delay * 2, 30_000)) {
    try {
      await tokens.refresh();
      await startApp();
      return;
    } catch (error) {
      if (!isTransient(error)) {
        tokens.clear();
        notice = tokens.isSessionGone(error) ? SESSION_ENDED : '';
        return;
      }
      bootMessage(`Cannot reach ThreadSpace (${error.message}). Retrying…`);
      await new Promise((resolve) => { setTimeout(resolve, delay); });
    }
  }
}

function bootMessage(text) {
  root.replaceChildren(h('main', { class: 'boot', id: 'boot' },
    h('h1', { text: 'ThreadSpace' }), h('p', { id: 'boot-message', role: 'status', text })));
}

async function boot() {
  tokens.onSessionEnded(sessionGone);
  window.addEventListener('hashchange', route);
  config = await loadConfig();
  if (tokens.hasStoredSession()) await resume();
  else setState('signed-out');
  booting = false;
  route();
}

boot();
