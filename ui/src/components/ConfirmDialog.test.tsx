import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { ConfirmDialog } from "./ConfirmDialog";

function dialog(props: Partial<Parameters<typeof ConfirmDialog>[0]> = {}) {
  const handlers = { onConfirm: vi.fn(), onCancel: vi.fn() };
  const view = render(
    <ConfirmDialog open title="Delete agent x?" confirmLabel="Delete agent" {...handlers} {...props}>
      It stops.
    </ConfirmDialog>,
  );
  return { ...handlers, view };
}

describe("ConfirmDialog", () => {
  it("opens as a modal with the safe choice focused", () => {
    dialog();
    const element = screen.getByRole("dialog", { name: "Delete agent x?" }) as HTMLDialogElement;
    expect(element.open).toBe(true);
    expect(document.activeElement?.textContent).toBe("Cancel");
  });

  it("confirms only from the confirm button; Cancel and Escape cancel", () => {
    const { onConfirm, onCancel } = dialog();
    fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    fireEvent(screen.getByRole("dialog"), new Event("cancel", { cancelable: true }));
    expect(onCancel).toHaveBeenCalledTimes(2);
    expect(onConfirm).not.toHaveBeenCalled();
    fireEvent.click(screen.getByRole("button", { name: "Delete agent" }));
    expect(onConfirm).toHaveBeenCalledOnce();
  });

  it("shows the error and cannot be dismissed while busy", () => {
    const { onCancel } = dialog({ busy: true, error: "the master cannot be deleted" });
    expect(screen.getByRole("alert").textContent).toBe("the master cannot be deleted");
    expect((screen.getByRole("button", { name: "Cancel" }) as HTMLButtonElement).disabled).toBe(true);
    fireEvent(screen.getByRole("dialog"), new Event("cancel", { cancelable: true }));
    expect(onCancel).not.toHaveBeenCalled();
  });

  it("closes when no longer open", () => {
    const { view } = dialog();
    view.rerender(
      <ConfirmDialog open={false} title="Delete agent x?" confirmLabel="Delete agent" onConfirm={() => {}} onCancel={() => {}}>
        It stops.
      </ConfirmDialog>,
    );
    expect((view.container.querySelector("dialog") as HTMLDialogElement).open).toBe(false);
  });
});
