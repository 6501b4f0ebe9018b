import { act, fireEvent, render, screen } from "@testing-library/react";
import { beforeEach, describe, expect, it } from "vitest";
import { apiKey, declineOfferedKey, setApiKey, takeKeyFromUrl } from "../auth";
import { KeySwitchDialog } from "./KeySwitch";

function linkWithKey(key: string): void {
  act(() => {
    window.history.replaceState(null, "", `/#access_token=${key}`);
    takeKeyFromUrl();
  });
}

describe("KeySwitchDialog", () => {
  beforeEach(() => {
    localStorage.clear();
    declineOfferedKey();
    setApiKey("mine-000000000000");
  });

  it("stays closed without an offered key", () => {
    const { container } = render(<KeySwitchDialog />);
    expect((container.querySelector("dialog") as HTMLDialogElement).open).toBe(false);
  });

  it("says what the new key does, with the safe choice focused; Escape keeps the current key", () => {
    render(<KeySwitchDialog />);
    linkWithKey("attacker-00000000");
    const dialog = screen.getByRole("dialog", { name: "Use the key from this link?" }) as HTMLDialogElement;
    expect(dialog.open).toBe(true);
    expect(dialog.textContent).toContain("This link signs you in with a different API key");
    expect(document.activeElement?.textContent).toBe("Keep current key");
    act(() => {
      fireEvent(dialog, new Event("cancel", { cancelable: true }));
    });
    expect(dialog.open).toBe(false);
    expect(apiKey()).toBe("mine-000000000000");
  });

  it("keeps the current key from its button, and switches only from the other", () => {
    render(<KeySwitchDialog />);
    linkWithKey("attacker-00000000");
    fireEvent.click(screen.getByRole("button", { name: "Keep current key" }));
    expect(apiKey()).toBe("mine-000000000000");
    linkWithKey("other-key-00000000");
    fireEvent.click(screen.getByRole("button", { name: "Use the new key" }));
    expect(apiKey()).toBe("other-key-00000000");
    expect((screen.getByRole("dialog", { hidden: true }) as HTMLDialogElement).open).toBe(false);
  });
});
