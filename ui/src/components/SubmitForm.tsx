import { useId, useState, type FormEvent, type KeyboardEvent } from "react";
import { ApiError, submitOrchestratorTask, type OrchestratorTask } from "../api";
import { Spinner } from "./States";

const EXAMPLES = [
  "Build a REST API for user management with CRUD endpoints, database models and unit tests",
  "Create a React dashboard that lists orders from a FastAPI backend, with a Dockerfile and CI",
];

export function SubmitForm({ onSubmitted }: { onSubmitted: (task: OrchestratorTask) => void }) {
  const [description, setDescription] = useState("");
  const [approveFirst, setApproveFirst] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const fieldId = useId();
  const hintId = useId();
  const errorId = useId();

  const submit = async (event?: FormEvent) => {
    event?.preventDefault();
    if (busy) return;
    if (!description.trim()) {
      setError("Describe the task first: what should be built?");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const task = await submitOrchestratorTask(description.trim(), null, { requirePlanApproval: approveFirst });
      setDescription("");
      onSubmitted(task);
    } catch (caught) {
      setError(caught instanceof ApiError ? caught.detail : String(caught));
    } finally {
      setBusy(false);
    }
  };

  const keyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) void submit();
  };

  return (
    <form onSubmit={submit} className="rounded-2xl border border-slate-800 bg-slate-900/70 p-4 shadow-lg shadow-black/20 sm:p-5">
      <label htmlFor={fieldId} className="block text-sm font-semibold text-slate-100">
        New task for Jason
      </label>
      <p id={hintId} className="mt-1 text-sm text-slate-300">
        Describe a coding task in plain language. Jason plans it, expert agents build the parts, and Jason puts them
        together.
      </p>
      <textarea
        id={fieldId}
        value={description}
        onChange={(event) => setDescription(event.target.value)}
        onKeyDown={keyDown}
        rows={3}
        aria-describedby={error ? `${hintId} ${errorId}` : hintId}
        aria-invalid={error ? true : undefined}
        placeholder={EXAMPLES[0]}
        className="mt-3 block w-full resize-y rounded-xl border border-slate-700 bg-slate-950 px-3 py-2.5 text-[15px] text-slate-100 placeholder:text-slate-500 focus:border-cyan-400 focus:ring-2 focus:ring-cyan-400/40 focus:outline-none"
      />
      {error && (
        <p id={errorId} role="alert" className="mt-2 text-sm text-rose-300">
          {error}
        </p>
      )}
      <div className="mt-3 flex flex-wrap items-center justify-between gap-3">
        <div className="flex flex-wrap gap-2">
          {EXAMPLES.map((example, index) => (
            <button
              key={example}
              type="button"
              onClick={() => setDescription(example)}
              className="rounded-full border border-slate-700 px-3 py-1 text-xs text-slate-300 hover:border-slate-500 hover:text-slate-100"
            >
              Example {index + 1}
            </button>
          ))}
        </div>
        <div className="flex flex-wrap items-center gap-3">
          <label className="flex items-center gap-2 text-sm text-slate-300">
            <input type="checkbox" checked={approveFirst} onChange={(event) => setApproveFirst(event.target.checked)} className="accent-cyan-400" />
            Let me approve the plan first
          </label>
          <span className="hidden text-xs text-slate-400 sm:inline">Ctrl + Enter</span>
          <button type="submit" disabled={busy} className="btn-primary">
            {busy && <Spinner className="size-4" />}
            {busy ? "Submitting…" : "Submit task"}
          </button>
        </div>
      </div>
    </form>
  );
}
