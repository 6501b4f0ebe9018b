// The API key this browser uses. The gateway wants one on every call (Authorization: Bearer, or
// ?access_token= on a stream, where a browser cannot set headers); it is kept in localStorage.
import { useSyncExternalStore } from "react";

const STORAGE = "aether.apiKey";
const listeners = new Set<() => void>();
let refused = false;
/** A key from a link, waiting for the user to accept it in place of the stored one (memory only). */
let offered: string | null = null;

function read(): string | null {
  try {
    return localStorage.getItem(STORAGE);
  } catch {
    return null;
  }
}

function changed(): void {
  listeners.forEach((listener) => listener());
}

export function apiKey(): string | null {
  return read();
}

export function setApiKey(key: string | null): void {
  try {
    if (key) localStorage.setItem(STORAGE, key);
    else localStorage.removeItem(STORAGE);
  } catch {
    // storage disabled: the key lasts as long as the page
  }
  refused = false;
  changed();
}

/** Forgets the key and asks for one (streams opened with it close as their pages unmount). */
export function signOut(): void {
  setApiKey(null);
  keyRefused();
}

/** Called when the gateway answers 401: the page asks for a key. */
export function keyRefused(): void {
  if (!refused) {
    refused = true;
    changed();
  }
}

function decoded(value: string): string | null {
  try {
    return decodeURIComponent(value).trim() || null;
  } catch {
    return null; // malformed escapes: not a key
  }
}

/**
 * `make up` prints a link with the development key in the fragment (never sent to a server).
 * With no key stored the link signs the browser in. With another key stored it only offers its
 * key (`useOfferedKey`): a crafted link must not move a user into someone else's tenant without
 * asking (issue 19, finding 9). Either way the key leaves the address bar and the history at once.
 */
export function takeKeyFromUrl(): void {
  const match = /(?:^#|&)access_token=([^&]*)/.exec(window.location.hash);
  if (!match) return;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  const key = decoded(match[1]);
  const current = read();
  if (!key || key === current) return;
  if (current) {
    offered = key;
    changed();
  } else {
    setApiKey(key);
  }
}

/** Replaces the stored key with the one the link offered. */
export function acceptOfferedKey(): void {
  const key = offered;
  offered = null;
  if (key) setApiKey(key);
  else changed();
}

/** Forgets the offered key; the stored one stays. */
export function declineOfferedKey(): void {
  offered = null;
  changed();
}

function useStore<T>(snapshot: () => T): T {
  return useSyncExternalStore((listener) => {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }, snapshot);
}

/** Whether a link offers a key other than the stored one (the key itself stays in this module). */
export function keyOffered(): boolean {
  return offered !== null;
}

export function useOfferedKey(): boolean {
  return useStore(keyOffered);
}

export function useAuth(): { key: string | null; refused: boolean } {
  const snapshot = useStore(() => `${refused}|${read() ?? ""}`);
  const [isRefused, key] = [snapshot.startsWith("true|"), snapshot.slice(snapshot.indexOf("|") + 1)];
  return { key: key || null, refused: isRefused };
}
