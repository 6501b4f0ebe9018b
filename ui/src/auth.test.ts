import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acceptOfferedKey, apiKey, declineOfferedKey, keyOffered, setApiKey, takeKeyFromUrl } from "./auth";

// Issue 19, finding 9: a link's key signs in a browser that has none, and only offers itself to
// one that has another.
function openLink(url: string): void {
  window.history.replaceState(null, "", url);
  takeKeyFromUrl();
}

describe("a key in the link", () => {
  beforeEach(() => {
    localStorage.clear();
    declineOfferedKey();
  });
  afterEach(() => window.history.replaceState(null, "", "/"));

  it("signs in a browser that has no key, and leaves the address bar at once", () => {
    openLink("/agents?x=1#access_token=dev-key-0000000000");
    expect(apiKey()).toBe("dev-key-0000000000");
    expect(keyOffered()).toBe(false);
    expect(window.location.href).not.toContain("access_token");
    expect(window.location.pathname + window.location.search).toBe("/agents?x=1");
  });

  it("does not replace another stored key: it is only offered, and forgotten when declined", () => {
    setApiKey("mine-000000000000");
    openLink("/#access_token=attacker-00000000");
    expect(apiKey()).toBe("mine-000000000000");
    expect(window.location.hash).toBe("");
    expect(keyOffered()).toBe(true);
    declineOfferedKey();
    expect(keyOffered()).toBe(false);
    acceptOfferedKey(); // nothing left to accept
    expect(apiKey()).toBe("mine-000000000000");
  });

  it("replaces the stored key only when the offer is accepted", () => {
    setApiKey("mine-000000000000");
    openLink("/tasks/abc#access_token=other%2Dkey-00000000");
    expect(apiKey()).toBe("mine-000000000000");
    acceptOfferedKey();
    expect(apiKey()).toBe("other-key-00000000");
    expect(window.location.pathname).toBe("/tasks/abc");
  });

  it("changes nothing for the key already stored, an empty or a malformed one", () => {
    setApiKey("mine-000000000000");
    for (const link of ["/#access_token=mine-000000000000", "/#access_token=", "/#access_token=%E0%A4%A"]) {
      openLink(link);
      expect(window.location.hash).toBe("");
      expect(keyOffered()).toBe(false);
      expect(apiKey()).toBe("mine-000000000000");
    }
  });
});
