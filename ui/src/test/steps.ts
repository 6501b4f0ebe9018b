// Steps as the gateway sends them, for the tests: `at` grows with every step made.
import type { ToolStep } from "../api";

let clock = 0;

export function step(index: number, tool: string, args: unknown, extra: Partial<ToolStep> = {}): ToolStep {
  clock += 1;
  return {
    task_id: "t", subtask_id: "a", attempt: 1, index, tool, call_id: `call-${index}`,
    arguments: typeof args === "string" ? args : JSON.stringify(args),
    ok: true, exit_code: null, summary: "", output: "", duration_ms: 3, kind: "tool",
    at: `2026-01-01T00:00:00.${String(clock).padStart(6, "0")}Z`, ...extra,
  };
}

export function check(index: number, ok: boolean, extra: Partial<ToolStep> = {}): ToolStep {
  return step(index, "check", "python3 -m pytest -q", {
    kind: "check", ok, exit_code: ok ? 0 : 1, summary: `exit code ${ok ? 0 : 1}`, ...extra,
  });
}
