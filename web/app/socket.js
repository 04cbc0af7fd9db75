// socket.js — the WebSocket to a gateway (docs/protocol.md): hello with resume, the resume
// cursor, round-robin gateways, backoff with full jitter, close codes, drain hints, and an
// application ping that also detects half-dead connections the browser would not notice.

const PING_EVERY_MS = 25_000; // well inside the gateway's 60 s idle timeout
const PONG_TIMEOUT_MS = 10_000;
const WELCOME_TIMEOUT_MS = 15_000; // connect + hello + welcome
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const STABLE_AFTER_MS = 10_000; // a connection that lasted this long resets the backoff
const MAX_AUTH_FAILURES = 3; // 4001 right after fresh tokens this often: the session is gone
const SYNTHETIC_DROP = 1006; // what we report when we abandon a silent socket ourselves

/**
 * Phases: 'connecting' (no socket or waiting for welcome), 'resuming' (welcomed, replay under
 * way until `resumed`), 'ready', 'offline' (waiting to retry while the browser is offline),
 * 'stopped'. Only in 'resuming' and 'ready' may frames be sent; sends of messages wait for
 * 'ready' (outbox.js) so a replayed copy of a message can settle its pending send first.
 */
export class Gateway {
  constructor({ urls, token, renewToken, onFrame, onSent = () => {}, onPhase, onReady, onDown, onSessionEnded }) {
    Object.assign(this, { urls, token, renewToken, onFrame, onSent, onPhase, onReady, onDown, onSessionEnded });
    this.index = Math.floor(Math.random() * urls.length); // spread clients over the gateways
    this.cursor = null; // resume.last_seq; null until the first welcome of this page
    this.phase = 'connecting';
    this.ws = null;
    this.generation = 0;
    this.attempt = 0;
    this.authFailures = 0;
    this.refCounter = 0;
    this.readyAt = 0;
    this.drainAt = 0;
    this.resuming = false;
    this.stopped = true;
    this.timers = { retry: 0, welcome: 0, ping: 0, pong: 0, drain: 0 };
    this.handleOnline = () => { if (this.phase === 'offline') this.connect(); };
  }

  get ready() {
    return this.phase === 'ready';
  }

  /** A unique `ref` for a request on any connection of this page. */
  nextRef(prefix) {
    this.refCounter += 1;
    return `${prefix}${this.refCounter}`;
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.handleOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.handleOnline);
    const { ws } = this;
    this.teardown();
    if (ws) closeQuietly(ws, 1000);
    this.setPhase('stopped');
  }

  /** Sends a frame if the connection is welcomed; false when it could not be sent. */
  send(frame) {
    const { ws } = this;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    if (this.phase !== 'ready' && this.phase !== 'resuming') return false;
    ws.send(JSON.stringify(frame));
    this.onSent(frame);
    return true;
  }

  async connect() {
    clearTimeout(this.timers.retry);
    if (this.stopped) return;
    const generation = ++this.generation;
    this.setPhase('connecting');
    let token;
    try {
      token = await this.token();
    } catch {
      // An ended session was already reported by tokens.js; anything else: try again later.
      if (!this.stopped && generation === this.generation) this.scheduleReconnect();
      return;
    }
    if (this.stopped || generation !== this.generation || !token) return;
    this.open(this.urls[this.index % this.urls.length], token);
  }

  open(url, token) {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.advance();
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.sendHello(ws, token);
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.closed(ws, event.code);
    this.timers.welcome = setTimeout(() => this.abandon(ws), WELCOME_TIMEOUT_MS);
  }

  sendHello(ws, token) {
    if (ws !== this.ws) return;
    const hello = { op: 'hello', token };
    // Every connection after the first welcome resumes, so nothing in between is lost.
    this.resuming = this.cursor !== null;
    if (this.resuming) hello.resume = { last_seq: this.cursor };
    ws.send(JSON.stringify(hello));
  }

  receive(ws, data) {
    if (ws !== this.ws || typeof data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.op !== 'string') return;
    this.track(frame);
    this.onFrame(frame);
    if (frame.op === 'welcome' && !this.resuming) this.becomeReady();
    if (frame.op === 'resumed') this.becomeReady();
  }

  // Protocol bookkeeping that must happen before the app sees the frame.
  track(frame) {
    switch (frame.op) {
      case 'welcome':
        this.welcomed(frame);
        break;
      case 'msg':
        this.raiseCursor(frame.seq);
        break;
      case 'resumed':
        // through_seq = max(last_seq, head_seq): everything up to it was replayed or announced.
        this.raiseCursor(frame.through_seq);
        break;
      case 'reconnect':
        this.drainHint(Number(frame.after_ms));
        break;
      case 'pong':
        clearTimeout(this.timers.pong);
        break;
      default:
        break;
    }
  }

  welcomed(frame) {
    clearTimeout(this.timers.welcome);
    this.authFailures = 0;
    // On a fresh start head_seq is the cursor. While resuming it is not: the replay of
    // (last_seq, head_seq] is still to come, and if this connection drops mid-replay the
    // next resume must start from the last message actually received.
    if (!this.resuming) this.raiseCursor(frame.head_seq);
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => this.ping(), PING_EVERY_MS);
    this.setPhase(this.resuming ? 'resuming' : 'ready');
  }

  raiseCursor(seq) {
    if (Number.isSafeInteger(seq) && seq >= 0) this.cursor = Math.max(this.cursor ?? 0, seq);
  }

  becomeReady() {
    this.readyAt = Date.now();
    this.setPhase('ready');
    this.onReady();
  }

  drainHint(afterMs) {
    const wait = Number.isFinite(afterMs) && afterMs > 0 ? Math.min(afterMs, 60_000) : 0;
    this.drainAt = Date.now() + wait;
    // The gateway closes with 1001; if that close never arrives, stop waiting for it.
    const { ws } = this;
    clearTimeout(this.timers.drain);
    this.timers.drain = setTimeout(() => this.abandon(ws), wait + 5_000);
  }

  ping() {
    const { ws } = this;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ op: 'ping', ref: this.nextRef('p') }));
    clearTimeout(this.timers.pong);
    this.timers.pong = setTimeout(() => this.abandon(ws), PONG_TIMEOUT_MS);
  }

  /** Gives up on a socket that went silent: report it dropped, close it without waiting. */
  abandon(ws) {
    if (!ws || ws !== this.ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    this.closed(ws, SYNTHETIC_DROP);
    closeQuietly(ws, 1000);
  }

  closed(ws, code) {
    if (ws !== this.ws) return;
    const stable = this.readyAt && Date.now() - this.readyAt >= STABLE_AFTER_MS;
    this.teardown();
    if (stable) this.attempt = 0;
    this.onDown(code);
    if (this.stopped) return;
    if (code === 4004) {
      // session_ended: this token is refused from now on; the app signs in again.
      this.stop();
      this.onSessionEnded();
      return;
    }
    this.advance();
    if (code === 4001) {
      this.reauthenticate();
    } else if (this.drainAt) {
      const wait = Math.max(0, this.drainAt - Date.now());
      this.drainAt = 0;
      this.setPhase('connecting');
      this.timers.retry = setTimeout(() => this.connect(), wait);
    } else if (code === 4029) {
      // Flooding: stay away 5–10 s. Full jitter could come straight back and be closed again.
      this.attempt = Math.max(this.attempt, 5);
      this.scheduleReconnect(BACKOFF_MAX_MS * (0.5 + Math.random() / 2));
    } else {
      this.scheduleReconnect();
    }
  }

  // 4001: the token was refused. Get a fresh one and resume; a token refused again and again
  // right after a refresh means the account or session is gone.
  async reauthenticate() {
    this.authFailures += 1;
    if (this.authFailures >= MAX_AUTH_FAILURES) {
      this.stop();
      this.onSessionEnded();
      return;
    }
    this.setPhase('connecting');
    try {
      await this.renewToken();
    } catch {
      if (!this.stopped) this.scheduleReconnect(); // tokens.js reports an ended session itself
      return;
    }
    if (this.authFailures > 1) this.scheduleReconnect();
    else this.connect();
  }

  /** Reconnects after `delay` ms; by default full jitter. */
  scheduleReconnect(delay = null) {
    if (this.stopped) return;
    clearTimeout(this.timers.retry);
    // Full jitter: a random delay up to an exponentially growing cap, so a gateway restart
    // does not bring every client back in the same instant.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 10);
    this.setPhase(navigator.onLine === false ? 'offline' : 'connecting');
    this.timers.retry = setTimeout(() => this.connect(), delay ?? Math.random() * cap);
  }

  /** Round robin: every reconnect tries the next gateway of the list. */
  advance() {
    this.index = (this.index + 1) % this.urls.length;
  }

  teardown() {
    for (const key of ['retry', 'welcome', 'pong', 'drain']) clearTimeout(this.timers[key]);
    clearInterval(this.timers.ping);
    if (this.ws) {
      this.ws.onopen = null;
      this.ws.onmessage = null;
      this.ws.onclose = null;
    }
    this.ws = null;
    this.readyAt = 0;
  }

  setPhase(phase) {
    if (this.phase === phase) return;
    this.phase = phase;
    this.onPhase(phase);
  }
}

function closeQuietly(ws, code) {
  try {
    ws.close(code);
  } catch {
    // Already closing or closed.
  }
}
