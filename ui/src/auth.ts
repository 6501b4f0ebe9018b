// The API key this browser uses. The gateway wants one on every call (Authorization: Bearer, or
// ?access_token= on a stream, where a browser cannot set headers); it is kept in localStorage.
import { useSyncExternalStore } from "react";

const STORAGE = "aether.apiKey";
const listeners = new Set<() => void>();
let refused = false;

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

/** `make up` prints a link with the development key in the fragment (never sent to a server). */
export function takeKeyFromUrl(): void {
  const match = /(?:^#|&)access_token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  setApiKey(decodeURIComponent(match[1]));
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
}

export function useAuth(): { key: string | null; refused: boolean } {
  const snapshot = useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => `${refused}|${read() ?? ""}`,
  );
  const [isRefused, key] = [snapshot.startsWith("true|"), snapshot.slice(snapshot.indexOf("|") + 1)];
  return { key: key || null, refused: isRefused };
}
