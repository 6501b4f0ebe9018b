import { useMemo, type KeyboardEvent } from "react";
import type { OrchestratorSubtask } from "../api";
import { duration, seconds } from "../format";
import { useMediaQuery } from "../hooks";
import { COMPACT_NODE_SIZE, NODE_SIZE, edgePath, layoutPlan } from "../layout";
import { subtaskLook } from "./Status";

type Subtask = Omit<OrchestratorSubtask, "result"> & { result?: string | null };

function clip(text: string, chars: number): string {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

function timing(subtask: Subtask, now: number): string {
  if (subtask.duration_ms !== null && subtask.duration_ms !== undefined) return duration(subtask.duration_ms / 1000);
  if (subtask.status === "executing" || subtask.status === "creating_agent") return duration(seconds(subtask.started_at, null, now));
  return "";
}

/** The plan as a layered graph: one node per subtask, an arrow from each dependency. */
export function PlanGraph({
  subtasks,
  selected,
  onSelect,
  now,
}: {
  subtasks: Subtask[];
  selected: string | null;
  onSelect: (id: string) => void;
  now: number;
}) {
  const wide = useMediaQuery("(min-width: 768px)");
  const direction = wide ? "LR" : "TB";
  const shape = subtasks.map((s) => `${s.id}<${s.depends_on.join(",")}`).join(";");
  // The layout depends only on the plan's shape, not on statuses: compute it once per plan.
  const size = wide ? NODE_SIZE : COMPACT_NODE_SIZE;
  const layout = useMemo(() => layoutPlan(subtasks, direction, size), [shape, direction]);
  const chars = wide ? 24 : 17;
  const byId = new Map(subtasks.map((s) => [s.id, s]));

  const keyDown = (event: KeyboardEvent<SVGGElement>, id: string) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onSelect(id);
    }
  };

  return (
    <div className="overflow-x-auto rounded-xl border border-slate-800 bg-slate-900/40">
      <svg
        role="group"
        aria-label={`Plan: ${subtasks.length} subtasks and their dependencies`}
        width={layout.width}
        height={layout.height}
        viewBox={`0 0 ${layout.width} ${layout.height}`}
        className="mx-auto block"
      >
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b" />
          </marker>
          <marker id="arrow-done" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#34d399" />
          </marker>
        </defs>
        {layout.edges.map((edge) => {
          const done = byId.get(edge.from)?.status === "completed";
          return (
            <path
              key={`${edge.from}->${edge.to}`}
              d={edgePath(edge.points)}
              fill="none"
              stroke={done ? "#34d399" : "#64748b"}
              strokeOpacity={done ? 0.8 : 0.7}
              strokeWidth={1.5}
              markerEnd={done ? "url(#arrow-done)" : "url(#arrow)"}
            />
          );
        })}
        {subtasks.map((subtask) => {
          const node = layout.nodes.get(subtask.id);
          if (!node) return null;
          const look = subtaskLook(subtask);
          const isSelected = subtask.id === selected;
          const time = timing(subtask, now);
          return (
            <g
              key={subtask.id}
              data-testid="plan-node"
              data-subtask={subtask.id}
              data-status={subtask.status}
              transform={`translate(${node.x} ${node.y})`}
              role="button"
              tabIndex={0}
              aria-pressed={isSelected}
              aria-label={`Subtask ${subtask.id}, ${subtask.agent_type}, ${look.label}${time ? `, ${time}` : ""}`}
              onClick={() => onSelect(subtask.id)}
              onKeyDown={(event) => keyDown(event, subtask.id)}
              className="plan-node cursor-pointer outline-none"
            >
              <title>{subtask.description}</title>
              <rect
                className={`node-frame ${look.active ? "node-active" : ""}`}
                width={node.width}
                height={node.height}
                rx={10}
                fill={isSelected ? "#1e293b" : "#0f172a"}
                stroke={look.stroke}
                strokeWidth={isSelected ? 2.5 : 1.5}
              />
              <rect x={0} y={0} width={5} height={node.height} rx={2} fill={look.stroke} />
              <text x={16} y={24} className="fill-slate-100 text-[13px] font-semibold">
                {clip(subtask.id, chars)}
              </text>
              <text x={16} y={43} className="fill-slate-300 text-[12px]">
                {clip(subtask.agent_type, chars + 3)}
              </text>
              <text x={16} y={63} className="text-[12px] font-medium" fill={look.text}>
                {look.label}
              </text>
              {time && (
                <text x={node.width - 12} y={63} textAnchor="end" className="fill-slate-300 text-[12px] tabular-nums">
                  {time}
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </div>
  );
}
