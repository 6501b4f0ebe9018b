import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { Header } from "./Header";

describe("Header", () => {
  it("names the Agent Hub, has no System Metrics and marks the current page", () => {
    const { container } = render(<Header path="/agents" />);
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect([...nav.querySelectorAll("a")].map((a) => a.textContent)).toEqual(["Mission Board", "Agent Hub"]);
    expect(screen.getByRole("link", { name: "Agent Hub" }).getAttribute("aria-current")).toBe("page");
    expect(container.textContent).not.toMatch(/Neural Link|System Metrics/);
  });

  it("keeps the Mission Board current on a task page and offers a skip link", () => {
    render(<Header path="/tasks/abc" />);
    expect(screen.getByRole("link", { name: "Mission Board" }).getAttribute("aria-current")).toBe("page");
    expect(screen.getByRole("link", { name: "Skip to content" }).getAttribute("href")).toBe("#content");
  });
});
