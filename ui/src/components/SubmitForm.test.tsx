import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
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
});
