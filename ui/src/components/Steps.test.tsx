import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { OrchestratorSubtask, Verification } from "../api";
import { check, step } from "../test/steps";
import { RepositoryChecks, SubtaskChecks, SubtaskSteps } from "./Steps";

type Subtask = Parameters<typeof SubtaskChecks>[0]["subtask"];

const subtask = (extra: Partial<OrchestratorSubtask> = {}): Subtask => ({
  id: "a", status: "executing", attempts: 1, steps: 3, tool_errors: 0, queued_at: null,
  verify: ["python3 -m pytest -q"], verification: null, ...extra,
});

const written = step(1, "write_file", { path: "sim_a.py", content: "def total(v):\n    return sum(v) - 1\n" }, {
  summary: "created sim_a.py (33 bytes)", output: "created sim_a.py (33 bytes)",
});
const failing = step(2, "run_command", { command: "python3 -m pytest -q" }, {
  ok: false, exit_code: 1, summary: "exit code 1 (0.3s)", output: "exit code 1 (0.3s)\nE   assert 5 == 6\n<b>not markup</b>", duration_ms: 310,
});
const fetched = [written, failing];
const live = [
  failing, // already fetched: shown once
  step(3, "edit_file", { path: "sim_a.py", old: "- 1", new: "" }, { summary: "edited sim_a.py", output: "edited sim_a.py" }),
  step(4, "run_command", { command: "python3 -m pytest -q" }, { exit_code: 0, summary: "exit code 0 (0.4s)", output: "exit code 0 (0.4s)\n1 passed" }),
  check(1, true, { output: "exit code 0\n1 passed in 0.01s", duration_ms: 420 }),
];

function answer(body: unknown, status = 200) {
  return vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));
}

afterEach(() => vi.unstubAllGlobals());

describe("SubtaskSteps", () => {
  it("shows the fetched steps and the live ones together, each once, with outcome, duration and the checks by round", async () => {
    const fetch = answer(fetched);
    vi.stubGlobal("fetch", fetch);
    render(<SubtaskSteps taskId="t1" subtask={subtask()} live={live} reconnects={0} />);
    await waitFor(() => expect(screen.getAllByTestId("step")).toHaveLength(5));
    expect(fetch).toHaveBeenCalledWith("/api/orchestrate/task/t1/subtasks/a/steps", expect.anything());
    const steps = screen.getAllByTestId("step");
    expect(steps.map((s) => `${s.dataset.kind}:${s.dataset.tool}:${s.dataset.exit}`)).toEqual([
      "tool:write_file:", "tool:run_command:1", "tool:edit_file:", "tool:run_command:0", "check:check:0",
    ]);
    expect(steps[0].textContent).toContain("sim_a.py (33 bytes)");
    expect(within(steps[1]).getByTestId("outcome").textContent).toBe("exit 1");
    expect(within(steps[1]).getByTestId("outcome").dataset.ok).toBe("false");
    expect(steps[1].textContent).toContain("310 ms");
    expect(within(steps[3]).getByTestId("outcome").textContent).toBe("exit 0");
    const round = screen.getByTestId("check-round");
    expect(round.textContent).toContain("Aether's checks, round 1");
    expect(within(round).getByTestId("outcome").textContent).toBe("passed");
    expect(screen.getByText(/new steps appear here/)).toBeTruthy(); // still running

    // The output on demand, as text: markup in it is not markup.
    const output = within(steps[1]).getByTestId("step-output");
    expect(output.closest("details")?.open).toBe(false);
    fireEvent.click(within(steps[1]).getByText("Output"));
    expect(output.closest("details")?.open).toBe(true);
    expect(output.tagName).toBe("PRE");
    expect(output.textContent).toContain("<b>not markup</b>");
    expect(output.querySelector("b")).toBeNull();
  });

  it("fetches again after a reconnect, and says so when the steps cannot be loaded", async () => {
    vi.stubGlobal("fetch", answer({ detail: "gateway restarting" }, 503));
    const { rerender } = render(<SubtaskSteps taskId="t1" subtask={subtask({ status: "completed" })} reconnects={0} />);
    expect(screen.getByRole("status").textContent).toContain("Loading the steps");
    await screen.findByText("The steps cannot be loaded");
    expect(screen.getByRole("alert").textContent).toContain("gateway restarting");

    vi.stubGlobal("fetch", answer(fetched));
    rerender(<SubtaskSteps taskId="t1" subtask={subtask({ status: "completed" })} reconnects={1} />);
    await waitFor(() => expect(screen.getAllByTestId("step")).toHaveLength(2));
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("says why there are no steps", async () => {
    vi.stubGlobal("fetch", answer([]));
    const { rerender } = render(<SubtaskSteps taskId="t1" subtask={subtask({ status: "pending", attempts: 0 })} reconnects={0} />);
    await screen.findByText("No steps yet: the subtask has not started.");
    rerender(<SubtaskSteps taskId="t1" subtask={subtask({ status: "completed", steps: 0 })} reconnects={0} />);
    await screen.findByText("The expert made no tool calls.");
  });
});

const passed: Verification = {
  passed: true, rounds: 2, note: null,
  checks: [{ command: "python3 -m pytest -q", passed: true, exit_code: 0, output_tail: "1 passed", duration_ms: 420, round: 2 }],
};
const failed: Verification = {
  passed: false, rounds: 3, note: "the checks could not run here: no sandbox",
  checks: [
    { command: "python3 -m pytest -q", passed: false, exit_code: null, output_tail: "not run: no sandbox", duration_ms: 0, round: 3 },
    { command: "ruff check .", passed: true, exit_code: 0, output_tail: "", duration_ms: 80, round: 3 },
  ],
};

describe("SubtaskChecks", () => {
  it("says whether the subtask's checks pass, in which round, with each command and its output on demand", () => {
    render(<SubtaskChecks subtask={subtask({ status: "completed", verification: passed })} />);
    const panel = screen.getByTestId("subtask-checks");
    expect(panel.dataset.passed).toBe("true");
    expect(panel.textContent).toContain("they pass in round 2 (after 1 fix round)");
    const [item] = within(panel).getAllByTestId("check");
    expect(item.textContent).toContain("python3 -m pytest -q");
    expect(within(item).getByTestId("outcome").textContent).toBe("passed");
    expect(item.textContent).toContain("exit 0");
    expect(within(item).getByTestId("step-output").textContent).toBe("1 passed");
  });

  it("says when they fail or could not run, and lists the commands not run yet", () => {
    const { rerender } = render(<SubtaskChecks subtask={subtask({ status: "failed", verification: failed })} />);
    const panel = screen.getByTestId("subtask-checks");
    expect(panel.textContent).toContain("they do NOT pass after 3 rounds");
    expect(panel.textContent).toContain("the checks could not run here: no sandbox");
    expect(within(panel).getAllByTestId("check").map((c) => c.dataset.passed)).toEqual(["false", "true"]);
    expect(panel.textContent).toContain("not run");
    rerender(<SubtaskChecks subtask={subtask({ status: "pending" })} />);
    expect(screen.getByTestId("subtask-checks").textContent).toContain("Not run yet");
    rerender(<SubtaskChecks subtask={subtask({ verify: [] })} />);
    expect(screen.queryByTestId("subtask-checks")).toBeNull();
  });
});

describe("RepositoryChecks", () => {
  it("says the repository passes its checks", () => {
    render(<RepositoryChecks verification={passed} />);
    expect(screen.getByTestId("repository-verdict").textContent).toBe("The repository passes its checks.");
  });

  it("names the failing commands when it does not", () => {
    render(<RepositoryChecks verification={failed} />);
    expect(screen.getByTestId("repository-verdict").textContent).toBe("The repository does NOT pass its checks: python3 -m pytest -q failed.");
    expect(screen.getByTestId("repository-checks").dataset.passed).toBe("false");
  });
});
