import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { OrchestratorTaskSummary } from "../api";
import { TaskCard } from "./Board";

const task = {
  id: "01a2-task",
  description: 'Build a REST API\nSIM-PLAN: {"subtasks": []}',
  status: "executing",
  master_deployment_id: "jason",
  progress: { total: 4, completed: 1, failed: 1, running: 1, pending: 1 },
  usage: { prompt_tokens: 1000, completion_tokens: 500, total_tokens: 1500, calls: 3, estimated_tokens: 0 },
  created_at: new Date().toISOString(),
  updated_at: new Date().toISOString(),
  revision: 12,
  last_event: { task_id: "01a2-task", seq: 9, at: new Date().toISOString(), kind: "subtask.status", message: "Subtask b failed: boom", level: "error", log: "" },
} as OrchestratorTaskSummary;

describe("TaskCard", () => {
  it("links to the task and shows its title, status, progress and latest event", () => {
    render(<ul><TaskCard task={task} /></ul>);
    const link = screen.getByRole("link");
    expect(link.getAttribute("href")).toBe("/tasks/01a2-task");
    expect(link.textContent).toContain("Build a REST API");
    expect(link.textContent).not.toContain("SIM-PLAN");
    expect(screen.getByText("Running")).toBeTruthy();
    const bar = screen.getByRole("progressbar", { name: "Subtasks finished" });
    expect([bar.getAttribute("aria-valuenow"), bar.getAttribute("aria-valuemax")]).toEqual(["2", "4"]);
    expect(screen.getByText("Subtask b failed: boom").className).toContain("text-rose-300");
    expect(link.textContent).toContain("1.5k tokens");
  });
});
