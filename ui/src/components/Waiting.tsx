// What waits for a person (issue 15): a plan to approve, edit or reject, and experts' questions.
import { useId, useState, type FormEvent } from "react";
import { ApiError, answerQuestion, approvePlan, rejectPlan, type OrchestratorTaskSummary, type TaskState } from "../api";
import { ago } from "../format";
import { Spinner } from "./States";

type Subtask = TaskState["subtasks"][number];

/** How many things of this task wait for a person: its plan, and each open question. */
export function waitingOn(task: Pick<OrchestratorTaskSummary, "status" | "open_questions">): number {
  return (task.status === "awaiting_approval" ? 1 : 0) + (task.open_questions ?? 0);
}

/** The plan as a person edits it: the fields a plan has, nothing the state adds. */
export function editablePlan(task: Pick<TaskState, "plan" | "subtasks">): string {
  const analysis = typeof task.plan?.analysis === "string" ? task.plan.analysis : "";
  const subtasks = task.subtasks.map(({ id, description, agent_type, depends_on, verify }) => ({ id, description, agent_type, depends_on, verify }));
  return JSON.stringify({ analysis, subtasks }, null, 2);
}

function message(caught: unknown): string {
  return caught instanceof ApiError ? caught.detail : String(caught);
}

export function ApprovalPanel({ task }: { task: TaskState }) {
  const [mode, setMode] = useState<"choose" | "edit" | "reject">("choose");
  const [plan, setPlan] = useState(() => editablePlan(task));
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const headingId = useId();
  const planId = useId();
  const reasonId = useId();
  const errorId = useId();

  const act = async (work: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (caught) {
      setError(message(caught));
    } finally {
      setBusy(false);
    }
  };
  const approveEdited = (event: FormEvent) => {
    event.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(plan);
    } catch (caught) {
      setError(`The plan is not valid JSON: ${(caught as Error).message}`);
      return;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      setError("The plan must be a JSON object with analysis and subtasks.");
      return;
    }
    void act(() => approvePlan(task.id, parsed as Record<string, unknown>));
  };
  const reject = (event: FormEvent) => {
    event.preventDefault();
    if (!reason.trim()) {
      setError("Say why the plan is rejected.");
      return;
    }
    void act(() => rejectPlan(task.id, reason.trim()));
  };
  const waited = task.approval?.requested_at;

  return (
    <section aria-labelledby={headingId} data-testid="approval-panel" className="rounded-2xl border border-orange-400/50 bg-orange-950/30 p-4 sm:p-5">
      <h2 id={headingId} className="text-lg font-semibold text-orange-100">
        Jason's plan waits for your approval
      </h2>
      <p className="mt-1 text-sm text-orange-100">
        Nothing runs until you approve it, as it is or edited{waited ? `; it has waited since ${ago(waited)}` : ""}. Its{" "}
        {task.subtasks.length} subtask{task.subtasks.length === 1 ? "" : "s"} are in the plan below.
      </p>
      {error && (
        <p id={errorId} role="alert" className="mt-3 rounded-lg bg-rose-950/60 px-3 py-2 text-sm wrap-anywhere text-rose-100">
          {error}
        </p>
      )}
      {mode === "choose" && (
        <div className="mt-4 flex flex-wrap gap-3">
          <button type="button" className="btn-primary" disabled={busy} onClick={() => void act(() => approvePlan(task.id))}>
            {busy && <Spinner className="size-4" />} Approve plan
          </button>
          <button type="button" className="btn-secondary" disabled={busy} onClick={() => setMode("edit")}>
            Edit plan
          </button>
          <button type="button" className="btn-danger" disabled={busy} onClick={() => setMode("reject")}>
            Reject…
          </button>
        </div>
      )}
      {mode === "edit" && (
        <form onSubmit={approveEdited} className="mt-4 space-y-3">
          <label htmlFor={planId} className="block text-sm font-semibold text-orange-100">
            Plan (JSON: analysis, and subtasks with id, description, agent_type, depends_on, verify)
          </label>
          <textarea
            id={planId}
            value={plan}
            onChange={(event) => setPlan(event.target.value)}
            rows={14}
            spellCheck={false}
            aria-describedby={error ? errorId : undefined}
            aria-invalid={error ? true : undefined}
            className="block w-full resize-y rounded-xl border border-slate-700 bg-slate-950 px-3 py-2.5 font-mono text-xs text-slate-100 focus:border-cyan-400 focus:ring-2 focus:ring-cyan-400/40 focus:outline-none"
          />
          <div className="flex flex-wrap gap-3">
            <button type="submit" className="btn-primary" disabled={busy}>
              {busy && <Spinner className="size-4" />} Approve edited plan
            </button>
            <button type="button" className="btn-secondary" disabled={busy} onClick={() => { setMode("choose"); setError(null); setPlan(editablePlan(task)); }}>
              Discard edits
            </button>
          </div>
        </form>
      )}
      {mode === "reject" && (
        <form onSubmit={reject} className="mt-4 space-y-3">
          <label htmlFor={reasonId} className="block text-sm font-semibold text-orange-100">
            Why reject it?
          </label>
          <input
            id={reasonId}
            value={reason}
            onChange={(event) => setReason(event.target.value)}
            maxLength={2000}
            aria-describedby={error ? errorId : undefined}
            className="block w-full rounded-xl border border-slate-700 bg-slate-950 px-3 py-2 text-sm text-slate-100 focus:border-cyan-400 focus:ring-2 focus:ring-cyan-400/40 focus:outline-none"
          />
          <div className="flex flex-wrap gap-3">
            <button type="submit" className="btn-danger" disabled={busy}>
              {busy && <Spinner className="size-4" />} Reject plan
            </button>
            <button type="button" className="btn-secondary" disabled={busy} onClick={() => { setMode("choose"); setError(null); }}>
              Keep it
            </button>
          </div>
        </form>
      )}
    </section>
  );
}

export function QuestionPanel({ taskId, subtask, onSelect }: { taskId: string; subtask: Subtask; onSelect?: (id: string) => void }) {
  const [answer, setAnswer] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const fieldId = useId();
  const errorId = useId();

  const send = async (event: FormEvent) => {
    event.preventDefault();
    if (!answer.trim()) {
      setError("Write an answer first.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await answerQuestion(taskId, subtask.id, answer.trim());
    } catch (caught) {
      setError(message(caught));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={send} data-testid="question-panel" data-subtask={subtask.id} className="rounded-2xl border border-orange-400/50 bg-orange-950/30 p-4 sm:p-5">
      <p className="text-sm text-orange-100">
        The {subtask.agent_type} expert of{" "}
        {onSelect ? (
          <button type="button" className="link font-mono" onClick={() => onSelect(subtask.id)}>
            {subtask.id}
          </button>
        ) : (
          <span className="font-mono">{subtask.id}</span>
        )}{" "}
        asks{subtask.asked_at ? ` (${ago(subtask.asked_at)})` : ""}; its work waits for your answer, the rest goes on:
      </p>
      <blockquote className="mt-2 border-l-2 border-orange-300 pl-3 text-base wrap-anywhere whitespace-pre-wrap text-slate-50" data-testid="question">
        {subtask.question}
      </blockquote>
      <label htmlFor={fieldId} className="mt-3 block text-sm font-semibold text-orange-100">
        Your answer
      </label>
      <textarea
        id={fieldId}
        value={answer}
        onChange={(event) => setAnswer(event.target.value)}
        rows={3}
        maxLength={20000}
        aria-describedby={error ? errorId : undefined}
        aria-invalid={error ? true : undefined}
        className="mt-1 block w-full resize-y rounded-xl border border-slate-700 bg-slate-950 px-3 py-2.5 text-sm text-slate-100 focus:border-cyan-400 focus:ring-2 focus:ring-cyan-400/40 focus:outline-none"
      />
      {error && (
        <p id={errorId} role="alert" className="mt-2 text-sm wrap-anywhere text-rose-200">
          {error}
        </p>
      )}
      <button type="submit" className="btn-primary mt-3" disabled={busy}>
        {busy && <Spinner className="size-4" />} Send answer
      </button>
    </form>
  );
}

/** A subtask's last question and its answer, once answered. */
export function QuestionAnswered({ subtask }: { subtask: Subtask }) {
  if (!subtask.question || subtask.status === "awaiting_input") return null;
  return (
    <div className="mt-4 border-t border-slate-800 pt-4 text-sm" data-testid="question-answered">
      <h3 className="mb-1 font-semibold text-slate-200">Its expert asked</h3>
      <p className="wrap-anywhere text-slate-200">{subtask.question}</p>
      <p className="mt-1 wrap-anywhere text-slate-300">
        {subtask.answer ? (
          <>
            <span className="text-slate-400">Answer: </span>
            {subtask.answer}
          </>
        ) : (
          "Not answered."
        )}
      </p>
    </div>
  );
}
