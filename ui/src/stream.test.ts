import { describe, expect, it } from "vitest";
import type { BoardStreamMessage, OrchestratorTaskSummary, TaskEvent, TaskState, TaskStreamMessage } from "./api";
import { emptyBoard, emptyTaskView, newestFirst, reduceBoard, reduceTask, streamUrl } from "./stream";

const event = (seq: number): TaskEvent => ({
  task_id: "t", seq, at: "2026-01-01T00:00:00Z", kind: "task.status", message: `event ${seq}`, level: "info", log: `line ${seq}`,
});
const state = (revision: number, status: TaskState["status"] = "executing") =>
  ({ id: "t", revision, status, subtasks: [], last_seq: 0 }) as unknown as TaskState;
const summary = (id: string, revision: number, created_at: string) =>
  ({ id, revision, created_at, status: "pending" }) as unknown as OrchestratorTaskSummary;

function fold(messages: TaskStreamMessage[]) {
  return messages.reduce(reduceTask, emptyTaskView);
}

describe("reduceTask", () => {
  it("appends events in order and ignores one it already has", () => {
    const view = fold([1, 2, 2, 1, 3].map((seq) => ({ type: "task.event", id: String(seq), data: event(seq) })));
    expect(view.events.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("keeps the newest state and notes the end", () => {
    const view = fold([
      { type: "task.state", id: null, data: state(5) },
      { type: "task.state", id: null, data: state(4) },
      { type: "task.state", id: null, data: state(9, "completed") },
      { type: "task.end", id: null, data: { task_id: "t", status: "completed", last_seq: 3 } },
    ]);
    expect(view.task?.revision).toBe(9);
    expect(view.ended).toBe(true);
  });
});

describe("reduceBoard", () => {
  it("keeps the newest summary of each task, drops removed ones and notes when the backlog is in", () => {
    const messages: BoardStreamMessage[] = [
      { type: "board.task", id: "3", data: summary("a", 3, "2026-01-01T00:00:01Z") },
      { type: "board.task", id: "4", data: summary("b", 4, "2026-01-01T00:00:02Z") },
      { type: "board.task", id: "2", data: summary("a", 2, "2026-01-01T00:00:01Z") },
      { type: "board.ready", id: "4", data: { revision: 4 } },
      { type: "board.task", id: "5", data: summary("c", 5, "2026-01-01T00:00:01.5Z") },
      { type: "board.removed", id: "6", data: { id: "b", revision: 6 } },
    ];
    const board = reduceBoard(emptyBoard, messages);
    expect(board.ready).toBe(true);
    expect(board.tasks.get("a")?.revision).toBe(3);
    expect(newestFirst(board).map((t) => t.id)).toEqual(["c", "a"]);
  });

  it("returns the same board when nothing changed, so React skips the render", () => {
    const board = reduceBoard(emptyBoard, [{ type: "board.task", id: "1", data: summary("a", 1, "2026-01-01T00:00:00Z") }]);
    expect(reduceBoard(board, [{ type: "board.task", id: "1", data: summary("a", 1, "2026-01-01T00:00:00Z") }])).toBe(board);
  });
});

describe("streamUrl", () => {
  it("uses the page's host, ws:// for http and the resume position as ?after=", () => {
    expect(streamUrl("/api/orchestrate/tasks/stream", null)).toBe(`ws://${window.location.host}/api/orchestrate/tasks/stream`);
    expect(streamUrl("/api/x", "17", { limit: "5" })).toBe(`ws://${window.location.host}/api/x?limit=5&after=17`);
  });
});
