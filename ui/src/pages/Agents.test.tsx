import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { AgentRecord } from "../api";
import { AgentCard } from "./Agents";

const base: AgentRecord = {
  id: "executor-python-backend-1", name: "Python Backend 1", role: "expert", agent_type: "python-backend", backend: "process",
  status: "busy", started_at: "2026-01-01T00:00:00Z", last_seen: new Date().toISOString(), current_task: "t1",
  current_subtask: "api", subtasks_done: 3, deletable: true, alive: true,
};

describe("AgentCard", () => {
  it("offers a labelled trash button on an expert, which asks to delete it", () => {
    const onDelete = vi.fn();
    render(<ul><AgentCard agent={base} onDelete={onDelete} /></ul>);
    fireEvent.click(screen.getByRole("button", { name: "Delete agent Python Backend 1" }));
    expect(onDelete).toHaveBeenCalledOnce();
    expect(screen.getByRole("link", { name: "api" }).getAttribute("href")).toBe("/tasks/t1");
  });

  it("never offers to delete the master", () => {
    render(
      <ul>
        <AgentCard agent={{ ...base, id: "jason", name: "Jason", role: "master", agent_type: "jason", deletable: false, status: "idle" }} onDelete={() => {}} />
      </ul>,
    );
    expect(screen.queryByRole("button")).toBeNull();
    expect(screen.getByText("Master")).toBeTruthy();
    expect(screen.getByText("Connected")).toBeTruthy();
  });
});
