// storage.js — localStorage that never throws (private windows, disabled storage, quota):
// without storage the session simply does not survive a reload.

export function readItem(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

/** Writes `value`; false when storage refused it (the caller may keep its own copy). */
export function writeItem(key, value) {
  try {
    window.localStorage.setItem(key, value);
    return true;
  } catch {
    return false;
  }
}

export function removeItem(key) {
  try {
    window.localStorage.removeItem(key);
  } catch {
    // Storage unavailable: nothing was stored either.
  }
}
