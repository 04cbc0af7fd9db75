// jobs.js — background jobs of docs/api.md, Data rights: an export or an erasure answers 202 with
// a job, which GET /v1/jobs/{job} follows (once a second) until it is `done` or `failed`; a done
// export's document is fetched with the bearer token and handed to the browser as a download.
// The document goes from memory straight to the download: it is never stored anywhere.

import * as api from './api.js';
import { isTransient } from './http.js';

const POLL_MS = 1_000;
const MAX_MISSES = 10; // transient failures in a row before following the job is given up

export const isFinished = (job) => job?.state === 'done' || job?.state === 'failed';

/**
 * Follows job `id` until it finishes; `onUpdate(job)` gets every answer. Resolves with the last
 * job, or null when `stopped()` turned true. Rejects when the job cannot be read (404, or a
 * transient failure ten times in a row).
 */
export async function followJob(id, { onUpdate, stopped }) {
  let misses = 0;
  for (;;) {
    await sleep(POLL_MS);
    if (stopped()) return null;
    let job;
    try {
      job = await api.job(id);
    } catch (error) {
      misses += 1;
      if (!isTransient(error) || misses >= MAX_MISSES) throw error;
      continue;
    }
    misses = 0;
    if (stopped()) return null;
    onUpdate(job);
    if (isFinished(job)) return job;
  }
}

/** The file name the server gives an export (Content-Disposition), and the one saved here. */
export const archiveName = (id) => `threadspace-export-${Number(id)}.json`;

/**
 * Downloads a finished export: GET /v1/jobs/{id}/archive with the bearer token, then an
 * <a download> on an object URL, clicked inside `container` (a modal dialog leaves the rest of
 * the page inert) and revoked shortly afterwards.
 */
export async function downloadArchive(id, container) {
  const blob = await api.jobArchive(id);
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  // Set as a property: dom.js h() keeps only http(s) URLs, and this one is our own blob: URL.
  link.href = url;
  link.download = archiveName(id);
  link.hidden = true;
  link.dataset.test = 'export-file';
  container.append(link);
  link.click();
  setTimeout(() => {
    URL.revokeObjectURL(url);
    link.remove();
  }, 30_000);
  return link.download;
}

function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}
