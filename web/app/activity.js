// activity.js — the user's own presence (docs/protocol.md, presence op): 'idle' after
// idle_after_ms without input or while the page is hidden, 'online' again on input or when the
// page shows. Input handlers only record a timestamp; one timer does the rest.

const INPUT_EVENTS = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'focus'];

export class Activity {
  constructor(idleAfterMs, onChange) {
    this.idleAfterMs = idleAfterMs;
    this.onChange = onChange;
    this.status = 'online';
    this.lastInput = Date.now();
    this.timer = 0;
  }

  start(signal) {
    const onInput = () => this.input();
    for (const type of INPUT_EVENTS) {
      window.addEventListener(type, onInput, { passive: true, capture: true, signal });
    }
    document.addEventListener('visibilitychange', () => this.visibility(), { signal });
    signal.addEventListener('abort', () => clearTimeout(this.timer));
    this.check();
  }

  input() {
    this.lastInput = Date.now();
    if (this.status === 'idle' && !document.hidden) this.set('online');
  }

  visibility() {
    if (document.hidden) this.set('idle');
    else this.input();
  }

  check() {
    const quietFor = Date.now() - this.lastInput;
    if (document.hidden || quietFor >= this.idleAfterMs) this.set('idle');
    clearTimeout(this.timer);
    const next = quietFor >= this.idleAfterMs ? this.idleAfterMs : this.idleAfterMs - quietFor;
    this.timer = setTimeout(() => this.check(), Math.max(250, next));
  }

  set(status) {
    if (this.status === status) return;
    this.status = status;
    this.onChange(status);
  }
}
