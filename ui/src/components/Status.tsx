import type { OrchestratorSubtask, SubtaskStatus, TaskStatus } from "../api";

export interface Look {
  label: string;
  /** Badge classes: text and background, each at least 4.5:1 against the page. */
  badge: string;
  /** Stroke of a plan node (3:1 against it, as a control's outline needs). */
  stroke: string;
  /** Text on a plan node (4.5:1 against it). */
  text: string;
  dot: string;
  active: boolean;
}

const LOOKS: Record<string, Look> = {
  pending: { label: "Pending", badge: "bg-slate-700/60 text-slate-200", stroke: "#64748b", text: "#cbd5e1", dot: "bg-slate-400", active: false },
  queued: { label: "Queued", badge: "bg-slate-700/60 text-slate-100", stroke: "#94a3b8", text: "#e2e8f0", dot: "bg-slate-300", active: false },
  planning: { label: "Planning", badge: "bg-violet-500/20 text-violet-200", stroke: "#a78bfa", text: "#c4b5fd", dot: "bg-violet-400", active: true },
  creating_agent: { label: "Starting agent", badge: "bg-sky-500/20 text-sky-200", stroke: "#38bdf8", text: "#7dd3fc", dot: "bg-sky-400", active: true },
  executing: { label: "Running", badge: "bg-cyan-500/20 text-cyan-200", stroke: "#22d3ee", text: "#67e8f9", dot: "bg-cyan-400", active: true },
  awaiting_approval: { label: "Awaiting approval", badge: "bg-orange-500/20 text-orange-200", stroke: "#fb923c", text: "#fdba74", dot: "bg-orange-400", active: true },
  awaiting_input: { label: "Awaiting answer", badge: "bg-orange-500/20 text-orange-200", stroke: "#fb923c", text: "#fdba74", dot: "bg-orange-400", active: true },
  synthesizing: { label: "Synthesizing", badge: "bg-fuchsia-500/20 text-fuchsia-200", stroke: "#e879f9", text: "#f0abfc", dot: "bg-fuchsia-400", active: true },
  completed: { label: "Completed", badge: "bg-emerald-500/20 text-emerald-200", stroke: "#34d399", text: "#6ee7b7", dot: "bg-emerald-400", active: false },
  failed: { label: "Failed", badge: "bg-rose-500/20 text-rose-200", stroke: "#fb7185", text: "#fda4af", dot: "bg-rose-400", active: false },
  blocked: { label: "Blocked", badge: "bg-rose-500/15 text-rose-200", stroke: "#f43f5e", text: "#fda4af", dot: "bg-rose-500", active: false },
  cancelled: { label: "Cancelled", badge: "bg-amber-500/20 text-amber-200", stroke: "#fbbf24", text: "#fcd34d", dot: "bg-amber-400", active: false },
};

export function taskLook(status: TaskStatus): Look {
  return LOOKS[status] ?? LOOKS.pending;
}

export function subtaskLook(subtask: Pick<OrchestratorSubtask, "status" | "queued_at" | "blocked_by">): Look {
  if (subtask.status === "pending" && subtask.queued_at) return LOOKS.queued;
  if (subtask.status === "failed" && subtask.blocked_by?.length) return LOOKS.blocked;
  return LOOKS[subtask.status as SubtaskStatus] ?? LOOKS.pending;
}

export function StatusBadge({ look, className = "" }: { look: Look; className?: string }) {
  return (
    <span className={`inline-flex shrink-0 items-center gap-1.5 rounded-full px-2.5 py-0.5 text-xs font-medium ${look.badge} ${className}`}>
      <span aria-hidden="true" className={`size-1.5 rounded-full ${look.dot} ${look.active ? "motion-safe:animate-pulse" : ""}`} />
      {look.label}
    </span>
  );
}
