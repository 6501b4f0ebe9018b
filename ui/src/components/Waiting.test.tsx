import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { TaskState } from "../api";
import { ApprovalPanel, QuestionAnswered, QuestionPanel, editablePlan, waitingOn } from "./Waiting";

type Subtask = TaskState["subtasks"][number];

const sub = (id: string, extra: Partial<Subtask> = {}): Subtask => ({
  id, description: `Build ${id}`, agent_type: "python-backend", status: "pending", depends_on: [], blocked_by: [], attempts: 0,
  replaced_by: [], replan_pending: false, replans: 0, retryable: false, files: [], refused_files: [], verify: ["pytest"],
  steps: 0, tool_errors: 0, questions: 0, usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, calls: 0, estimated_tokens: 0 },
  ...extra,
});

const task = {
  id: "t1", status: "awaiting_approval", plan: { analysis: "Jason's analysis", subtasks: [] },
  subtasks: [sub("a", { dispatches: 3 } as Partial<Subtask>), sub("b", { depends_on: ["a"] })],
  approval: { timeout_s: 60, requested_at: new Date().toISOString(), edited: false },
} as unknown as TaskState;

function answer(body: unknown, status = 200) {
  return vi.fn(async (_url: string, _init?: RequestInit) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));
}

afterEach(() => vi.unstubAllGlobals());

describe("waitingOn", () => {
  it("counts the plan waiting for approval and each open question", () => {
    expect(waitingOn({ status: "awaiting_approval", open_questions: 0 })).toBe(1);
    expect(waitingOn({ status: "executing", open_questions: 2 })).toBe(2);
    expect(waitingOn({ status: "executing", open_questions: 0 })).toBe(0);
  });
});

describe("ApprovalPanel", () => {
  it("offers the plan to edit with the fields a plan has, and nothing the state adds", () => {
    expect(JSON.parse(editablePlan(task))).toEqual({
      analysis: "Jason's analysis",
      subtasks: [
        { id: "a", description: "Build a", agent_type: "python-backend", depends_on: [], verify: ["pytest"] },
        { id: "b", description: "Build b", agent_type: "python-backend", depends_on: ["a"], verify: ["pytest"] },
      ],
    });
  });

  it("approves the plan as it is", async () => {
    const fetch = answer({});
    vi.stubGlobal("fetch", fetch);
    render(<ApprovalPanel task={task} />);
    fireEvent.click(screen.getByRole("button", { name: "Approve plan" }));
    await waitFor(() => expect(fetch).toHaveBeenCalledOnce());
    const [url, init] = fetch.mock.calls[0];
    expect([url, init?.method, init?.body]).toEqual(["/api/orchestrate/task/t1/approve", "POST", "{}"]);
  });

  it("refuses an edit that is not JSON without asking the gateway, and shows the gateway's reasons for a bad plan", async () => {
    const fetch = answer({ detail: "the edited plan cannot be used: subtask 'a': unknown agent type 'cobol'", problems: [] }, 422);
    vi.stubGlobal("fetch", fetch);
    render(<ApprovalPanel task={task} />);
    fireEvent.click(screen.getByRole("button", { name: "Edit plan" }));
    const field = screen.getByLabelText(/^Plan \(JSON/);
    fireEvent.change(field, { target: { value: "{ not json" } });
    fireEvent.click(screen.getByRole("button", { name: "Approve edited plan" }));
    expect(screen.getByRole("alert").textContent).toMatch(/not valid JSON/);
    expect(fetch).not.toHaveBeenCalled();
    fireEvent.change(field, { target: { value: JSON.stringify({ subtasks: [{ id: "a", description: "x", agent_type: "cobol" }] }) } });
    fireEvent.click(screen.getByRole("button", { name: "Approve edited plan" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/unknown agent type 'cobol'/));
    expect(JSON.parse(String(fetch.mock.calls[0][1]?.body)).plan.subtasks[0].agent_type).toBe("cobol");
  });

  it("rejects only with a reason", async () => {
    const fetch = answer({});
    vi.stubGlobal("fetch", fetch);
    render(<ApprovalPanel task={task} />);
    fireEvent.click(screen.getByRole("button", { name: "Reject…" }));
    fireEvent.click(screen.getByRole("button", { name: "Reject plan" }));
    expect(screen.getByRole("alert").textContent).toMatch(/Say why/);
    fireEvent.change(screen.getByLabelText("Why reject it?"), { target: { value: "too costly" } });
    fireEvent.click(screen.getByRole("button", { name: "Reject plan" }));
    await waitFor(() => expect(fetch).toHaveBeenCalledOnce());
    expect([fetch.mock.calls[0][0], fetch.mock.calls[0][1]?.body]).toEqual(["/api/orchestrate/task/t1/reject", '{"reason":"too costly"}']);
  });
});

describe("QuestionPanel", () => {
  const asking = sub("api", { status: "awaiting_input", question: "PostgreSQL or SQLite?", questions: 1, asked_at: new Date().toISOString() });

  it("shows the question and sends the answer", async () => {
    const fetch = answer({});
    vi.stubGlobal("fetch", fetch);
    render(<QuestionPanel taskId="t1" subtask={asking} />);
    expect(screen.getByTestId("question").textContent).toBe("PostgreSQL or SQLite?");
    fireEvent.click(screen.getByRole("button", { name: "Send answer" }));
    expect(screen.getByRole("alert").textContent).toMatch(/Write an answer first/);
    fireEvent.change(screen.getByLabelText("Your answer"), { target: { value: " PostgreSQL " } });
    fireEvent.click(screen.getByRole("button", { name: "Send answer" }));
    await waitFor(() => expect(fetch).toHaveBeenCalledOnce());
    expect([fetch.mock.calls[0][0], fetch.mock.calls[0][1]?.body]).toEqual(["/api/orchestrate/task/t1/subtasks/api/answer", '{"answer":"PostgreSQL"}']);
  });

  it("says why an answer was refused", async () => {
    vi.stubGlobal("fetch", answer({ detail: "subtask 'api' has no open question" }, 409));
    render(<QuestionPanel taskId="t1" subtask={asking} />);
    fireEvent.change(screen.getByLabelText("Your answer"), { target: { value: "late" } });
    fireEvent.click(screen.getByRole("button", { name: "Send answer" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/no open question/));
  });

  it("keeps the question and its answer on the subtask once answered", () => {
    render(<QuestionAnswered subtask={{ ...asking, status: "completed", answer: "PostgreSQL" }} />);
    expect(screen.getByTestId("question-answered").textContent).toMatch(/PostgreSQL or SQLite\?.*Answer: PostgreSQL/);
  });
});
