// storage.js — localStorage that never throws (private windows, disabled storage, quota):
// without storage the session simply does not survive a reload.

export function readItem(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function writeItem(key, value) {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // Storage unavailable: nothing to do, the in-memory state still works.
  }
}

export function removeItem(key) {
  try {
    window.localStorage.removeItem(key);
  } catch {
    // Storage unavailable: nothing was stored either.
  }
}
