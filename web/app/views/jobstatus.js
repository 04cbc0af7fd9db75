// views/jobstatus.js — the progress of one background job (an export or an erasure; docs/api.md,
// Data rights): started by a button of the caller's, followed once a second until it is done or
// failed, in a status line (`data-test="<prefix>-status"`) and, when it failed, an alert with the
// server's words (`<prefix>-error`). A finished export offers "Download" (`<prefix>-download`);
// a finished erasure shows its summary, one "kind: outcome" line per kind (`<prefix>-summary`).

import { h, setMessage } from '../dom.js';
import { downloadArchive, followJob, isFinished } from '../jobs.js';

const STATE_TEXT = {
  queued: 'Queued: it starts in a moment…',
  running: 'Working on it…',
};

export class JobProgress {
  /**
   * `start()`: the request answering 202 with the job; `trigger`: the button that starts it
   * (aria-disabled while the job runs); `exportJob`: a finished job offers its document;
   * `onStarted(job)`: the server accepted it; `onFinished(job)`: it is done or failed.
   */
  constructor({ prefix, start, trigger = null, exportJob = false, onStarted = null, onFinished = null }) {
    Object.assign(this, { prefix, start, trigger, exportJob, onStarted, onFinished });
    this.job = null;
    this.run = 0; // the newest run: an older one's answers are void
    this.running = false;
    this.status = h('p', { class: 'job-status', role: 'status', dataset: { test: `${prefix}-status` } });
    this.error = h('p', { class: 'error', role: 'alert', hidden: true, dataset: { test: `${prefix}-error` } });
    this.summary = h('ul', { class: 'job-summary', hidden: true, 'aria-label': 'What was done', dataset: { test: `${prefix}-summary` } });
    this.download = h('button', { type: 'button', class: 'job-download', hidden: true, dataset: { test: `${prefix}-download` }, text: 'Download' });
    this.download.addEventListener('click', () => this.save());
    this.element = h('div', { class: 'job-progress', dataset: { test: `${prefix}-progress` } },
      this.status, this.error, this.summary, this.download);
  }

  /** Starts the job (once at a time) and follows it. */
  async begin() {
    if (this.running) return;
    const run = ++this.run;
    this.setRunning(true);
    this.clear();
    this.status.textContent = 'Starting…';
    let job;
    try {
      job = await this.start();
    } catch (error) {
      if (run !== this.run) return;
      this.setRunning(false);
      this.status.textContent = '';
      setMessage(this.error, `Could not start: ${error.message}`);
      return;
    }
    if (run !== this.run) return;
    this.show(job);
    this.onStarted?.(job);
    if (!isFinished(job) && Number.isSafeInteger(job?.id)) {
      try {
        job = await followJob(job.id, { onUpdate: (update) => this.show(update), stopped: () => run !== this.run });
      } catch (error) {
        if (run !== this.run) return;
        setMessage(this.error, `Could not follow the job: ${error.message}`);
        job = null;
      }
      if (run !== this.run) return;
    }
    this.setRunning(false);
    if (job && isFinished(job)) this.onFinished?.(job);
  }

  /** Stops following (the app is going away, or the view starts over). */
  stop() {
    this.run += 1;
    this.setRunning(false);
  }

  /** Stops and empties it. */
  reset() {
    this.stop();
    this.job = null;
    this.clear();
  }

  clear() {
    this.status.textContent = '';
    setMessage(this.error, '');
    this.summary.replaceChildren();
    this.summary.hidden = true;
    this.download.hidden = true;
  }

  setRunning(on) {
    this.running = on;
    if (!this.trigger) return;
    if (on) this.trigger.setAttribute('aria-disabled', 'true');
    else this.trigger.removeAttribute('aria-disabled');
  }

  show(job) {
    this.job = job;
    const state = job?.state;
    this.element.dataset.state = typeof state === 'string' ? state : '';
    if (state === 'failed') {
      this.status.textContent = 'Failed.';
      setMessage(this.error, typeof job.error === 'string' && job.error ? job.error : 'The job failed.');
    } else if (state === 'done') {
      this.status.textContent = this.exportJob ? doneExportText(job) : 'Done.';
      if (this.exportJob) this.download.hidden = false;
      else this.showSummary(job.summary);
    } else {
      this.status.textContent = STATE_TEXT[state] ?? 'Waiting for the server…';
    }
  }

  showSummary(summary) {
    if (!summary || typeof summary !== 'object') return;
    const items = Object.entries(summary).map(([kind, outcome]) => h('li', { dataset: { kind }, text: `${kind}: ${outcomeText(outcome)}` }));
    this.summary.replaceChildren(...items);
    this.summary.hidden = items.length === 0;
  }

  async save() {
    const id = this.job?.id;
    if (!Number.isSafeInteger(id) || this.download.getAttribute('aria-disabled') === 'true') return;
    this.download.setAttribute('aria-disabled', 'true');
    setMessage(this.error, '');
    this.status.textContent = 'Downloading…';
    try {
      const name = await downloadArchive(id, this.element);
      this.status.textContent = `Downloaded ${name}.`;
    } catch (error) {
      this.status.textContent = '';
      setMessage(this.error, error.code === 'expired'
        ? 'This export has expired (they are kept 7 days): export again.'
        : `Could not download the export: ${error.message}`);
    } finally {
      this.download.removeAttribute('aria-disabled');
    }
  }
}

function doneExportText(job) {
  const bytes = Number(job.archive_bytes);
  const size = Number.isFinite(bytes) && bytes >= 0 ? ` (${formatBytes(bytes)})` : '';
  return `Your export is ready${size}.`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** `{"deleted":6}` → "deleted 6"; `{"kept":"why"}` → "kept (why)"; a string as it is. */
function outcomeText(outcome) {
  if (outcome === null || typeof outcome !== 'object') return String(outcome);
  return Object.entries(outcome).map(([key, value]) => {
    if (typeof value === 'number' || typeof value === 'boolean') return `${key} ${value}`;
    if (typeof value === 'string') return `${key} (${value})`;
    return `${key} ${JSON.stringify(value)}`;
  }).join(', ') || 'nothing';
}
