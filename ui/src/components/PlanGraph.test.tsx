import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { OrchestratorSubtask } from "../api";
import { PlanGraph } from "./PlanGraph";

function subtask(id: string, status: OrchestratorSubtask["status"], depends_on: string[] = [], extra: Partial<OrchestratorSubtask> = {}): OrchestratorSubtask {
  return {
    id, description: `Build ${id}`, agent_type: "python-backend", status, depends_on, blocked_by: [], attempts: 0,
    replaced_by: [], replan_pending: false, replans: 0, retryable: false, files: [], refused_files: [],
    verify: [], steps: 0, tool_errors: 0, questions: 0,
    usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, calls: 0, estimated_tokens: 0 }, ...extra,
  };
}

const NOW = Date.parse("2026-01-01T00:01:00Z");
const plan = [
  subtask("schema", "completed", [], { duration_ms: 1500, agent_type: "database-expert" }),
  subtask("api", "executing", ["schema"], { started_at: "2026-01-01T00:00:48Z" }),
  subtask("ui", "pending", ["schema"], { queued_at: "2026-01-01T00:00:50Z", agent_type: "react-frontend" }),
  subtask("tests", "failed", ["api", "ui"], { blocked_by: ["api"] }),
];

describe("PlanGraph", () => {
  it("draws a node per subtask that says its id, agent type, status and time", () => {
    render(<PlanGraph subtasks={plan} selected={null} onSelect={() => {}} now={NOW} />);
    const nodes = screen.getAllByTestId("plan-node");
    expect(nodes.map((n) => n.getAttribute("data-status"))).toEqual(["completed", "executing", "pending", "failed"]);
    expect(screen.getByRole("button", { name: "Subtask schema, database-expert, Completed, 1.5 s" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Subtask api, python-backend, Running, 12 s" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Subtask ui, react-frontend, Queued" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Subtask tests, python-backend, Blocked" })).toBeTruthy();
  });

  it("draws an arrow per dependency, green once the dependency completed", () => {
    const { container } = render(<PlanGraph subtasks={plan} selected={null} onSelect={() => {}} now={NOW} />);
    const arrows = [...container.querySelectorAll("path[marker-end]")];
    expect(arrows).toHaveLength(4);
    expect(arrows.filter((a) => a.getAttribute("marker-end") === "url(#arrow-done)")).toHaveLength(2);
  });

  it("selects a subtask by click, Enter or Space, and marks the selected one", () => {
    const onSelect = vi.fn();
    render(<PlanGraph subtasks={plan} selected="ui" onSelect={onSelect} now={NOW} />);
    const api = screen.getByRole("button", { name: /Subtask api/ });
    fireEvent.click(api);
    fireEvent.keyDown(api, { key: "Enter" });
    fireEvent.keyDown(screen.getByRole("button", { name: /Subtask tests/ }), { key: " " });
    fireEvent.keyDown(api, { key: "a" });
    expect(onSelect.mock.calls).toEqual([["api"], ["api"], ["tests"]]);
    expect(screen.getByRole("button", { name: /Subtask ui/ }).getAttribute("aria-pressed")).toBe("true");
    for (const node of screen.getAllByTestId("plan-node")) expect(node.getAttribute("tabindex")).toBe("0");
  });
});
