// people.js — display names. Members and above page the org directory (GET /v1/users); guests
// may not (403), so for them each person we need is asked for once (GET /v1/users/{id}; 404
// means we may not see them). Unknown people show as "user 12".

import * as api from './api.js';
import { ApiError } from './http.js';

const CONCURRENCY = 4;

export class People {
  constructor(store) {
    this.store = store;
    this.requested = new Set();
    this.queue = [];
    this.running = 0;
    this.directory = null; // the promise of the directory load
  }

  /** Loads the whole directory once (admins also use it for the people table). */
  loadDirectory() {
    if (!this.directory) this.directory = this.pageDirectory();
    return this.directory;
  }

  async pageDirectory() {
    try {
      let after = null;
      do {
        const page = await api.listUsers(after);
        for (const user of page.users || []) this.store.setUser(user);
        after = page.next_after ?? null;
      } while (after !== null);
      return true;
    } catch (error) {
      // 403 for guests: they look people up one by one. Anything else: retry on next need.
      if (!(error instanceof ApiError && error.status === 403)) this.directory = null;
      return false;
    } finally {
      this.store.emit('people');
    }
  }

  /** Re-reads the directory (after an admin change). */
  reloadDirectory() {
    this.directory = null;
    return this.loadDirectory();
  }

  /** Makes sure these users' names will be known; views re-render on 'people'. */
  async ensure(ids) {
    const wanted = [...new Set(ids)].filter((id) => Number.isSafeInteger(id) && id > 0);
    if (!wanted.some((id) => !this.store.users.has(id))) return;
    await this.loadDirectory();
    for (const id of wanted) {
      if (this.store.users.has(id) || this.requested.has(id)) continue;
      this.requested.add(id);
      this.queue.push(id);
    }
    this.pump();
  }

  pump() {
    while (this.running < CONCURRENCY && this.queue.length) {
      const id = this.queue.shift();
      this.running += 1;
      this.fetchOne(id).finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  }

  async fetchOne(id) {
    try {
      this.store.setUser(await api.getUser(id));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) this.store.users.set(id, null);
      else this.requested.delete(id); // transient: ask again next time it is needed
      return;
    }
    this.store.emit('people');
  }
}
