// An expert's steps (its tool calls, and Aether's checks after them) as the task page shows them:
// merged from the steps route and the live `task.step` messages, summarised, grouped by run and round.
import type { ToolStep } from "./api";

/** One step of one run: the key the gateway's stream deduplicates by, too. */
export function stepKey(step: Pick<ToolStep, "attempt" | "kind" | "index">): string {
  return `${step.attempt}:${step.kind}:${step.index}`;
}

/** Microseconds since the epoch: `at` keeps them, and a fast loop makes several steps a millisecond. */
function stepTime(at: string | undefined): number {
  if (!at) return 0;
  const fraction = /\.(\d+)/.exec(at)?.[1] ?? "";
  const whole = Date.parse(at.replace(/\.\d+/, ""));
  return Number.isNaN(whole) ? 0 : whole * 1000 + Number(fraction.slice(0, 6).padEnd(6, "0"));
}

/**
 * Every step of `lists` once (a later copy of a step wins), oldest first: by run (`attempt`), then
 * time (tool calls and checks are numbered apart, and one agent stamps both), then number.
 */
export function mergeSteps(...lists: (readonly ToolStep[] | undefined)[]): ToolStep[] {
  const byKey = new Map<string, ToolStep>();
  for (const list of lists) for (const step of list ?? []) byKey.set(stepKey(step), step);
  return [...byKey.values()].sort(
    (a, b) =>
      a.attempt - b.attempt ||
      stepTime(a.at) - stepTime(b.at) ||
      (a.kind === b.kind ? a.index - b.index : a.kind === "tool" ? -1 : 1),
  );
}

function parsed(raw: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(raw);
    return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A string field of arguments that are not (or no longer: they are cut at 2,000 characters) JSON. */
function field(raw: string, name: string): string | undefined {
  const match = new RegExp(`"${name}"\\s*:\\s*"((?:[^"\\\\]|\\\\.)*)`).exec(raw);
  if (!match) return undefined;
  try {
    return JSON.parse(`"${match[1]}"`) as string;
  } catch {
    return match[1];
  }
}

function oneLine(text: string, limit = 120): string {
  const [first, ...rest] = text.trim().split("\n");
  const line = first.length > limit ? `${first.slice(0, limit - 1)}…` : first;
  return rest.length ? `${line} …` : line;
}

const encoder = new TextEncoder();

/** What a step did, in a few words: `app/main.py (412 bytes)`, `python3 -m pytest -q`. */
export function stepTarget(step: Pick<ToolStep, "tool" | "kind" | "arguments" | "summary" | "ok">): string {
  if (step.kind === "check") return oneLine(step.arguments);
  const args = parsed(step.arguments);
  const text = (name: string): string | undefined => {
    const value = args ? args[name] : field(step.arguments, name);
    return typeof value === "string" ? value : undefined;
  };
  const path = text("path");
  switch (step.tool) {
    case "list_files":
      return path || ".";
    case "read_file": {
      const offset = args?.offset;
      return `${path ?? "?"}${typeof offset === "number" && offset > 0 ? ` from ${offset}` : ""}`;
    }
    case "write_file": {
      const content = text("content");
      // The result says how many bytes were written; the arguments may have been cut.
      const written = step.ok ? /\((\d+) bytes\)/.exec(step.summary)?.[1] : undefined;
      const bytes = written ? Number(written) : args && content !== undefined ? encoder.encode(content).length : null;
      return `${path ?? "?"}${bytes !== null ? ` (${bytes} ${bytes === 1 ? "byte" : "bytes"})` : ""}`;
    }
    case "edit_file":
      return path ?? "?";
    case "run_command":
      return oneLine(text("command") ?? "?");
    default:
      return oneLine(step.arguments || "{}", 80);
  }
}

/** The step as one line: `write_file app/main.py (412 bytes)`. */
export function stepLine(step: Pick<ToolStep, "tool" | "kind" | "arguments" | "summary" | "ok">): string {
  return `${step.kind === "check" ? "check" : step.tool} ${stepTarget(step)}`;
}

export interface Outcome {
  ok: boolean;
  /** What the badge says: `exit 1`, `ok`, `error`, `timed out`, `passed`. */
  label: string;
  /** For a check: how its command ended (`exit 0`, `not run`), beside the badge. */
  detail?: string;
}

function ending(step: Pick<ToolStep, "ok" | "exit_code" | "summary">): string {
  if (step.exit_code !== null && step.exit_code !== undefined) return `exit ${step.exit_code}`;
  if (step.ok) return "ok";
  const summary = step.summary.toLowerCase();
  if (summary.startsWith("timed out")) return "timed out";
  if (summary.startsWith("killed")) return "killed";
  if (summary.startsWith("could not run")) return "not run";
  return "error";
}

export function stepOutcome(step: Pick<ToolStep, "kind" | "ok" | "exit_code" | "summary">): Outcome {
  if (step.kind === "check") return { ok: step.ok, label: step.ok ? "passed" : "failed", detail: ending(step) };
  return { ok: step.ok, label: ending(step) };
}

/** Milliseconds as the step list writes them: `12 ms`, `1.4 s`, `2 min 05 s`. */
export function stepDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
}

export interface StepGroup {
  attempt: number;
  kind: ToolStep["kind"];
  /** For checks: which run of the checks in this attempt (1 after the expert's loop, more after each fix round). */
  round: number;
  steps: ToolStep[];
}

/** Consecutive steps of one kind in one run; each group of checks is one round of them. */
export function groupSteps(steps: readonly ToolStep[]): StepGroup[] {
  const groups: StepGroup[] = [];
  let rounds = 0;
  for (const step of steps) {
    const last = groups.at(-1);
    if (last && last.attempt === step.attempt && last.kind === step.kind) {
      last.steps.push(step);
      continue;
    }
    if (!last || last.attempt !== step.attempt) rounds = 0;
    if (step.kind === "check") rounds += 1;
    groups.push({ attempt: step.attempt, kind: step.kind, round: step.kind === "check" ? rounds : 0, steps: [step] });
  }
  return groups;
}
