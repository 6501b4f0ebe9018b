import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SubmitForm } from "./SubmitForm";

describe("SubmitForm", () => {
  it("asks for a description instead of sending an empty one", () => {
    const onSubmitted = vi.fn();
    render(<SubmitForm onSubmitted={onSubmitted} />);
    fireEvent.click(screen.getByRole("button", { name: "Submit task" }));
    expect(screen.getByRole("alert").textContent).toMatch(/Describe the task first/);
    const field = screen.getByLabelText("New task for Jason");
    expect(field.getAttribute("aria-invalid")).toBe("true");
    expect(onSubmitted).not.toHaveBeenCalled();
  });

  it("fills in an example", () => {
    render(<SubmitForm onSubmitted={() => {}} />);
    fireEvent.click(screen.getByRole("button", { name: "Example 1" }));
    expect((screen.getByLabelText("New task for Jason") as HTMLTextAreaElement).value).toMatch(/^Build a REST API/);
  });

  it("asks for the plan to wait for approval when the box is ticked", async () => {
    const fetch = vi.fn(async (_url: string, _init?: RequestInit) => new Response(JSON.stringify({ id: "t1" }), { status: 202 }));
    vi.stubGlobal("fetch", fetch);
    const onSubmitted = vi.fn();
    render(<SubmitForm onSubmitted={onSubmitted} />);
    fireEvent.change(screen.getByLabelText("New task for Jason"), { target: { value: "Build it" } });
    fireEvent.click(screen.getByLabelText("Let me approve the plan first"));
    fireEvent.click(screen.getByRole("button", { name: "Submit task" }));
    await waitFor(() => expect(onSubmitted).toHaveBeenCalledOnce());
    expect(JSON.parse(String(fetch.mock.calls[0][1]?.body))).toEqual({ description: "Build it", require_plan_approval: true });
  });
});

afterEach(() => vi.unstubAllGlobals());
