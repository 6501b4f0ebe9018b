import { describe, expect, it } from "vitest";
import type { TaskStreamMessage, ToolStep } from "./api";
import { groupSteps, mergeSteps, stepDuration, stepLine, stepOutcome } from "./steps";
import { emptyTaskView, reduceTask } from "./stream";
import { check, step } from "./test/steps";

describe("stepLine", () => {
  it("says what each tool did in a few words", () => {
    const content = "print('é')\n"; // 12 bytes in UTF-8, 11 characters
    expect(stepLine(step(1, "write_file", { path: "app/main.py", content }))).toBe("write_file app/main.py (12 bytes)");
    expect(stepLine(step(2, "run_command", { command: "python3 -m pytest -q" }))).toBe("run_command python3 -m pytest -q");
    expect(stepLine(step(3, "edit_file", { path: "app/main.py", old: "a", new: "b" }))).toBe("edit_file app/main.py");
    expect(stepLine(step(4, "read_file", { path: "app/main.py", offset: 64000 }))).toBe("read_file app/main.py from 64000");
    expect(stepLine(step(5, "list_files", {}))).toBe("list_files .");
    expect(stepLine(check(1, true))).toBe("check python3 -m pytest -q");
    expect(stepLine(step(6, "run_command", { command: "cd app &&\npytest" }))).toBe("run_command cd app && …");
  });

  it("takes the size from the result when the arguments were cut, and copes with arguments that are not JSON", () => {
    const cut = `{"path": "big.py", "content": "${"x".repeat(1970)}`;
    expect(stepLine(step(1, "write_file", cut, { summary: "created big.py (5000 bytes)" }))).toBe("write_file big.py (5000 bytes)");
    expect(stepLine(step(2, "write_file", '{"path": "x.py", "content": ', { ok: false, summary: "error: the arguments are not valid JSON" }))).toBe(
      "write_file x.py",
    );
    expect(stepLine(step(3, "read_file", "{}", { ok: false }))).toBe("read_file ?");
    expect(stepLine(step(4, "delete_everything", { path: "/" }, { ok: false }))).toBe('delete_everything {"path":"/"}');
  });
});

describe("stepOutcome", () => {
  it("gives a command's exit code, a tool error, and a check's verdict", () => {
    expect(stepOutcome(step(1, "run_command", {}, { ok: false, exit_code: 1 }))).toEqual({ ok: false, label: "exit 1" });
    expect(stepOutcome(step(2, "run_command", {}, { ok: true, exit_code: 0 }))).toEqual({ ok: true, label: "exit 0" });
    expect(stepOutcome(step(3, "write_file", {}, { ok: true }))).toEqual({ ok: true, label: "ok" });
    expect(stepOutcome(step(4, "nope", {}, { ok: false, summary: "error: unknown tool 'nope'" }))).toEqual({ ok: false, label: "error" });
    expect(stepOutcome(step(5, "run_command", {}, { ok: false, summary: "timed out after 20s: …" })).label).toBe("timed out");
    expect(stepOutcome(check(1, true))).toEqual({ ok: true, label: "passed", detail: "exit 0" });
    expect(stepOutcome(check(2, false, { exit_code: null, summary: "could not run: no sandbox" }))).toEqual({ ok: false, label: "failed", detail: "not run" });
  });
});

describe("mergeSteps", () => {
  it("keeps each (attempt, kind, index) once, oldest first, tool calls and checks in the order they ran", () => {
    const run = [step(1, "write_file", {}), step(2, "run_command", {}), check(1, false), step(3, "edit_file", {}), check(2, true)];
    const retry = [step(1, "list_files", {}, { attempt: 2 })];
    // Fetched: the first three; live: some of the same again (a reconnect), then the rest.
    const merged = mergeSteps(run.slice(0, 3), [run[2], run[1], ...retry, run[4], run[3]]);
    expect(merged.map((s) => `${s.attempt}:${s.kind}:${s.index}`)).toEqual(["1:tool:1", "1:tool:2", "1:check:1", "1:tool:3", "1:check:2", "2:tool:1"]);
    expect(mergeSteps(merged, merged)).toHaveLength(6);
    expect(mergeSteps(undefined, [])).toEqual([]);
  });

  it("orders steps stamped in the same millisecond by their microseconds", () => {
    const a = step(1, "write_file", {}, { at: "2026-01-01T00:00:01.000900Z" });
    const b = step(2, "write_file", {}, { at: "2026-01-01T00:00:01.000100Z", kind: "check" });
    const c = step(3, "write_file", {}, { at: "2026-01-01T00:00:01Z" }); // no fraction: pydantic leaves it out at .000000
    expect(mergeSteps([a, b, c]).map((s) => s.index)).toEqual([3, 2, 1]);
  });
});

describe("groupSteps", () => {
  it("puts each run of Aether's checks in a round of its own, counted per attempt", () => {
    const steps = mergeSteps([
      step(1, "write_file", {}), check(1, false), step(2, "edit_file", {}), check(2, true),
      step(1, "write_file", {}, { attempt: 2 }), check(1, true, { attempt: 2 }),
    ]);
    expect(groupSteps(steps).map((g) => [g.attempt, g.kind, g.round, g.steps.length])).toEqual([
      [1, "tool", 0, 1], [1, "check", 1, 1], [1, "tool", 0, 1], [1, "check", 2, 1], [2, "tool", 0, 1], [2, "check", 1, 1],
    ]);
  });
});

describe("the task stream's steps", () => {
  it("collects live steps per subtask, each once", () => {
    const live = (s: ToolStep): TaskStreamMessage => ({ type: "task.step", id: null, data: s });
    const b = step(1, "list_files", {}, { subtask_id: "b" });
    const view = [live(step(1, "write_file", {})), live(b), live(step(1, "write_file", {})), live(check(1, true))].reduce(reduceTask, emptyTaskView);
    expect(view.steps.a.map((s) => `${s.kind}:${s.index}`)).toEqual(["tool:1", "check:1"]);
    expect(view.steps.b).toEqual([b]);
  });
});

describe("stepDuration", () => {
  it("writes milliseconds under a second, seconds above", () => {
    expect([stepDuration(0), stepDuration(412), stepDuration(1440), stepDuration(42_000), stepDuration(125_000)]).toEqual([
      "0 ms", "412 ms", "1.4 s", "42 s", "2 min 05 s",
    ]);
  });
});
