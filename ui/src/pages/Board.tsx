import { useMemo, useState } from "react";
import type { OrchestratorTaskSummary } from "../api";
import { ConnectionBadge, Empty, ErrorState } from "../components/States";
import { StatusBadge, taskLook } from "../components/Status";
import { SubmitForm } from "../components/SubmitForm";
import { waitingOn } from "../components/Waiting";
import { ago, firstLine, tokens } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useBoardStream } from "../live";
import { Link, navigate } from "../router";
import { newestFirst } from "../stream";

const FILTERS = {
  all: { label: "All", match: () => true },
  waiting: { label: "Waiting for you", match: (t: OrchestratorTaskSummary) => waitingOn(t) > 0 },
  active: { label: "Active", match: (t: OrchestratorTaskSummary) => !["completed", "failed", "cancelled"].includes(t.status) },
  completed: { label: "Completed", match: (t: OrchestratorTaskSummary) => t.status === "completed" },
  failed: { label: "Failed", match: (t: OrchestratorTaskSummary) => t.status === "failed" || t.status === "cancelled" },
} as const;
type Filter = keyof typeof FILTERS;

export function BoardPage() {
  useDocumentTitle("Mission Board");
  const { board, connection, error, retry } = useBoardStream();
  useNow(true, 30_000); // keeps "2 min ago" true
  const [filter, setFilter] = useState<Filter>("all");
  const tasks = useMemo(() => newestFirst(board), [board]);
  const shown = tasks.filter(FILTERS[filter].match);
  const waiting = tasks.reduce((sum, task) => sum + waitingOn(task), 0);

  return (
    <div className="space-y-6">
      <SubmitForm onSubmitted={(task) => navigate(`/tasks/${task.id}`)} />
      <section aria-labelledby="tasks-heading" className="space-y-3">
        <div className="flex flex-wrap items-center justify-between gap-3">
          <div className="flex items-center gap-3">
            <h2 id="tasks-heading" className="text-lg font-semibold">
              Tasks
            </h2>
            <ConnectionBadge state={connection} />
            {waiting > 0 && (
              <button
                type="button"
                data-testid="waiting-count"
                onClick={() => setFilter("waiting")}
                className="rounded-full bg-orange-500/20 px-2.5 py-0.5 text-xs font-semibold text-orange-100 hover:bg-orange-500/30"
              >
                {waiting} waiting for you
              </button>
            )}
          </div>
          <div role="group" aria-label="Show tasks" className="flex flex-wrap gap-1.5">
            {(Object.keys(FILTERS) as Filter[]).map((key) => (
              <button
                key={key}
                type="button"
                aria-pressed={filter === key}
                onClick={() => setFilter(key)}
                className="chip"
              >
                {FILTERS[key].label}
                <span className="ml-1.5 text-slate-400 tabular-nums">{tasks.filter(FILTERS[key].match).length}</span>
              </button>
            ))}
          </div>
        </div>
        {error ? (
          <ErrorState title="Live task list unavailable" detail={error.detail} onRetry={retry} />
        ) : !board.ready ? (
          <TaskListSkeleton />
        ) : tasks.length === 0 ? (
          <Empty title="No tasks yet">
            Submit your first task above (or pick an example): its plan and every agent's progress appear here live.
          </Empty>
        ) : shown.length === 0 ? (
          <Empty title={`No ${FILTERS[filter].label.toLowerCase()} tasks`}>
            <button type="button" className="link" onClick={() => setFilter("all")}>
              Show all tasks
            </button>
          </Empty>
        ) : (
          <ul className="grid grid-cols-1 gap-3 md:grid-cols-2" data-testid="task-list">
            {shown.map((task) => (
              <TaskCard key={task.id} task={task} />
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

export function TaskCard({ task }: { task: OrchestratorTaskSummary }) {
  const look = taskLook(task.status);
  const { total, completed, failed } = task.progress;
  const percent = total ? Math.round(((completed + failed) / total) * 100) : 0;
  return (
    <li>
      <Link
        to={`/tasks/${task.id}`}
        data-testid="task-card"
        data-task={task.id}
        data-status={task.status}
        className="group block h-full rounded-xl border border-slate-800 bg-slate-900/60 p-4 transition hover:border-slate-600 hover:bg-slate-900 focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none"
      >
        <div className="flex items-start justify-between gap-3">
          <p className="line-clamp-2 min-w-0 font-medium wrap-anywhere text-slate-100">{firstLine(task.description)}</p>
          <StatusBadge look={look} />
        </div>
        <div
          className="mt-3 h-1.5 overflow-hidden rounded-full bg-slate-800"
          role="progressbar"
          aria-label="Subtasks finished"
          aria-valuemin={0}
          aria-valuemax={total}
          aria-valuenow={completed + failed}
        >
          <div
            className={`h-full rounded-full transition-[width] duration-500 ${failed ? "bg-rose-400" : "bg-emerald-400"}`}
            style={{ width: `${percent}%` }}
          />
        </div>
        {waitingOn(task) > 0 && (
          <p className="mt-2 text-sm font-medium text-orange-200" data-testid="task-waiting">
            {task.status === "awaiting_approval" ? "Its plan waits for your approval" : `${task.open_questions} question${task.open_questions === 1 ? "" : "s"} for you`}
          </p>
        )}
        {task.last_event && (
          <p className={`mt-2 truncate text-sm ${task.last_event.level === "info" ? "text-slate-300" : task.last_event.level === "warning" ? "text-amber-300" : "text-rose-300"}`}>
            {task.last_event.message}
          </p>
        )}
        <p className="mt-2 flex flex-wrap gap-x-3 gap-y-1 text-xs text-slate-400">
          <span>{ago(task.created_at)}</span>
          <span>
            {completed}/{total} subtasks
          </span>
          <span>{tokens(task.usage.total_tokens)} tokens</span>
          <span className="font-mono">{task.id.slice(-8)}</span>
        </p>
      </Link>
    </li>
  );
}

function TaskListSkeleton() {
  return (
    <div role="status" aria-label="Loading tasks" className="grid grid-cols-1 gap-3 md:grid-cols-2">
      {[0, 1, 2, 3].map((n) => (
        <div key={n} className="h-32 rounded-xl border border-slate-800 bg-slate-900/60 motion-safe:animate-pulse" />
      ))}
    </div>
  );
}
