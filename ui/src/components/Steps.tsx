import { useEffect, useId, useMemo, useState } from "react";
import { fetchSubtaskSteps, type CheckRun, type OrchestratorSubtask, type ToolStep, type Verification } from "../api";
import { groupSteps, mergeSteps, stepDuration, stepOutcome, stepTarget } from "../steps";
import { ErrorState, Loading, Spinner } from "./States";

type Subtask = Pick<OrchestratorSubtask, "id" | "status" | "attempts" | "steps" | "tool_errors" | "queued_at" | "verify" | "verification">;

const RUNNING = new Set(["executing", "creating_agent"]);

/** Badge colours of the status badges (Status.tsx), which pass the contrast audit on every panel. */
const PASS = "bg-emerald-500/20 text-emerald-200";
const FAIL = "bg-rose-500/20 text-rose-200";

function Mark({ ok }: { ok: boolean }) {
  return (
    <svg aria-hidden="true" viewBox="0 0 24 24" className="size-3" fill="none" stroke="currentColor" strokeWidth="3" strokeLinecap="round" strokeLinejoin="round">
      <path d={ok ? "M5 12.5l4.5 4.5L19 7.5" : "M6.5 6.5l11 11M17.5 6.5l-11 11"} />
    </svg>
  );
}

/** Pass or fail, said in words and by a mark, not by colour alone. */
export function OutcomeBadge({ ok, label, className = "" }: { ok: boolean; label: string; className?: string }) {
  return (
    <span
      data-testid="outcome"
      data-ok={ok}
      className={`inline-flex shrink-0 items-center gap-1 rounded-full px-2 py-0.5 text-xs font-medium ${ok ? PASS : FAIL} ${className}`}
    >
      <Mark ok={ok} />
      {label}
    </span>
  );
}

/** Output the model or a command wrote: text in a <pre>, never markup, shown on demand. */
function Output({ text, label = "Output" }: { text: string; label?: string }) {
  return (
    <details className="group mt-1.5">
      <summary className="cursor-pointer rounded text-xs text-cyan-300 focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none">
        {label}
      </summary>
      <pre
        data-testid="step-output"
        className="mt-1.5 max-h-80 overflow-auto rounded-lg border border-slate-800 bg-slate-950 p-2.5 font-mono text-xs leading-snug wrap-anywhere whitespace-pre-wrap text-slate-200"
      >
        {text}
      </pre>
    </details>
  );
}

function StepItem({ step }: { step: ToolStep }) {
  const outcome = stepOutcome(step);
  const check = step.kind === "check";
  // A result of one line is shown as it is; a longer one on demand. A tool error's first line is
  // always shown: the model read it, and people should see what it was told.
  const single = step.output.trim() === step.summary.trim();
  const failed = !step.ok && (step.exit_code === null || step.exit_code === undefined);
  const line = single || failed ? step.summary : null;
  return (
    <li
      data-testid="step"
      data-kind={step.kind}
      data-tool={step.tool}
      data-ok={step.ok}
      data-exit={step.exit_code ?? ""}
      className="min-w-0 rounded-lg border border-slate-800 bg-slate-950/40 px-3 py-2"
    >
      <div className="flex flex-wrap items-center gap-x-2 gap-y-1 text-sm">
        <span className="w-6 shrink-0 text-right text-xs text-slate-400 tabular-nums">{step.index}</span>
        <span
          className={`shrink-0 rounded px-1.5 py-0.5 font-mono text-xs ${check ? "bg-violet-500/20 text-violet-100" : "bg-slate-800 text-slate-200"}`}
          title={check ? "Run by Aether after the expert's loop" : undefined}
        >
          {check ? "Aether's check" : step.tool}
        </span>
        <code className="min-w-0 flex-1 basis-40 font-mono text-xs wrap-anywhere text-slate-100">{stepTarget(step)}</code>
        <OutcomeBadge ok={outcome.ok} label={outcome.label} />
        {outcome.detail && <span className="text-xs text-slate-300">{outcome.detail}</span>}
        <span className="text-xs text-slate-400 tabular-nums">{stepDuration(step.duration_ms)}</span>
      </div>
      {line && <p className={`mt-1 text-xs sm:pl-8 wrap-anywhere ${step.ok ? "text-slate-300" : "text-rose-200"}`}>{line}</p>}
      {step.output && !single && (
        <div className="sm:pl-8">
          <Output text={step.output} />
        </div>
      )}
    </li>
  );
}

/** The steps, oldest first: each run (when there were several), each round of Aether's checks apart. */
export function StepList({ steps }: { steps: readonly ToolStep[] }) {
  const groups = groupSteps(steps);
  const runs = new Set(steps.map((s) => s.attempt)).size;
  return (
    <ol className="space-y-1.5" aria-label="Steps">
      {groups.map((group, i) => {
        const run = runs > 1 && (i === 0 || groups[i - 1].attempt !== group.attempt);
        const items = group.steps.map((step) => <StepItem key={`${step.kind}:${step.index}`} step={step} />);
        return (
          <li key={`${group.attempt}:${group.kind}:${group.steps[0].index}`} className="space-y-1.5" data-testid={group.kind === "check" ? "check-round" : "tool-steps"} data-round={group.round || undefined}>
            {run && <p className="pt-2 text-xs font-semibold tracking-wide text-slate-300 uppercase">Run {group.attempt}</p>}
            {group.kind === "check" ? (
              <div className="rounded-xl border border-violet-400/30 bg-violet-950/20 p-2">
                <p className="mb-1.5 px-1 text-xs font-medium text-violet-100">
                  Aether's checks, round {group.round}
                  <span className="font-normal text-slate-300"> · run by Aether in the sandbox after the expert's work</span>
                </p>
                <ol className="space-y-1.5">{items}</ol>
              </div>
            ) : (
              <ol className="space-y-1.5">{items}</ol>
            )}
          </li>
        );
      })}
    </ol>
  );
}

/** A subtask's steps from the steps route, merged with the ones arriving live; fetched again
 * when the subtask changes status or the stream reconnected (live steps are not resumed). */
export function useSubtaskSteps(taskId: string, subtask: Subtask, live: readonly ToolStep[] | undefined, reconnects: number) {
  const [fetched, setFetched] = useState<{ subtask: string; steps?: ToolStep[]; error?: string }>({ subtask: subtask.id });
  const [again, setAgain] = useState(0);
  useEffect(() => {
    let current = true;
    fetchSubtaskSteps(taskId, subtask.id).then(
      (steps) => current && setFetched({ subtask: subtask.id, steps }),
      (error: Error) =>
        current && setFetched((known) => ({ subtask: subtask.id, steps: known.subtask === subtask.id ? known.steps : undefined, error: error.message })),
    );
    return () => {
      current = false;
    };
  }, [taskId, subtask.id, subtask.status, subtask.attempts, reconnects, again]);
  const mine = fetched.subtask === subtask.id ? fetched : null;
  const steps = useMemo(() => mergeSteps(mine?.steps, live), [mine?.steps, live]);
  return { steps, loading: !mine?.steps && !mine?.error, error: mine?.error ?? null, retry: () => setAgain((n) => n + 1) };
}

export function SubtaskSteps({ taskId, subtask, live, reconnects }: { taskId: string; subtask: Subtask; live?: readonly ToolStep[]; reconnects: number }) {
  const { steps, loading, error, retry } = useSubtaskSteps(taskId, subtask, live, reconnects);
  const headingId = useId();
  const running = RUNNING.has(subtask.status);
  return (
    <div className="mt-4 border-t border-slate-800 pt-4" data-testid="subtask-steps" aria-labelledby={headingId} role="region">
      <div className="mb-2 flex flex-wrap items-baseline justify-between gap-2">
        <h3 id={headingId} className="text-sm font-semibold text-slate-200">
          Steps
        </h3>
        {subtask.steps > 0 && (
          <p className="text-xs text-slate-300 tabular-nums">
            {subtask.steps} tool {subtask.steps === 1 ? "call" : "calls"} · {subtask.tool_errors} tool {subtask.tool_errors === 1 ? "error" : "errors"}
          </p>
        )}
      </div>
      {error && steps.length === 0 ? (
        <ErrorState title="The steps cannot be loaded" detail={error} onRetry={retry} />
      ) : loading && steps.length === 0 ? (
        <Loading label="Loading the steps…" />
      ) : steps.length === 0 ? (
        <p className="flex items-center gap-2 text-sm text-slate-300">
          {running ? (
            <>
              <Spinner /> No tool calls yet: the expert is thinking…
            </>
          ) : subtask.status === "pending" ? (
            "No steps yet: the subtask has not started."
          ) : (
            "The expert made no tool calls."
          )}
        </p>
      ) : (
        <>
          {error && (
            <p role="alert" className="mb-2 text-xs text-rose-200">
              Only the live steps are shown: {error}{" "}
              <button type="button" className="link" onClick={retry}>
                Load them again
              </button>
            </p>
          )}
          <StepList steps={steps} />
          {running && (
            <p className="mt-2 flex items-center gap-2 text-xs text-slate-300">
              <Spinner className="size-3" /> The expert is working; new steps appear here as it makes them.
            </p>
          )}
        </>
      )}
    </div>
  );
}

function CheckItem({ check }: { check: CheckRun }) {
  const ended =
    check.exit_code !== null && check.exit_code !== undefined
      ? `exit ${check.exit_code}`
      : check.output_tail.startsWith("not run")
        ? "not run"
        : check.output_tail.startsWith("timed out")
          ? "timed out"
          : "did not finish";
  return (
    <li data-testid="check" data-passed={check.passed} className="min-w-0 rounded-lg border border-slate-800 bg-slate-950/40 px-3 py-2">
      <div className="flex flex-wrap items-center gap-x-2 gap-y-1">
        <code className="min-w-0 flex-1 basis-40 font-mono text-xs wrap-anywhere text-slate-100">{check.command}</code>
        <OutcomeBadge ok={check.passed} label={check.passed ? "passed" : "failed"} />
        <span className="text-xs text-slate-300">{ended}</span>
        <span className="text-xs text-slate-400 tabular-nums">{stepDuration(check.duration_ms)}</span>
      </div>
      {check.output_tail && <Output text={check.output_tail} label={check.passed ? "Output (its end)" : "Why it failed (the end of its output)"} />}
    </li>
  );
}

function rounds(verification: Verification): string {
  return verification.rounds > 1 ? ` in round ${verification.rounds} (after ${verification.rounds - 1} fix ${verification.rounds === 2 ? "round" : "rounds"})` : "";
}

/** A subtask's checks (the plan's `verify`) and how Aether's last run of them went. */
export function SubtaskChecks({ subtask }: { subtask: Subtask }) {
  const verification = subtask.verification;
  if (!subtask.verify.length && !verification) return null;
  const checks = verification?.checks ?? [];
  const notRun = subtask.verify.filter((command) => !checks.some((c) => c.command === command));
  return (
    <div className="mt-4 border-t border-slate-800 pt-4" data-testid="subtask-checks" data-passed={verification ? verification.passed : ""}>
      <div className="mb-2 flex flex-wrap items-center justify-between gap-2">
        <h3 className="text-sm font-semibold text-slate-200">Checks</h3>
        {verification && <OutcomeBadge ok={verification.passed} label={verification.passed ? "Checks pass" : "Checks fail"} />}
      </div>
      <p className="mb-2 text-sm text-slate-300">
        {!verification
          ? RUNNING.has(subtask.status)
            ? "Aether runs them in the sandbox when the expert is done."
            : "Not run yet: Aether runs them after the expert's work."
          : verification.passed
            ? `Aether ran them in the sandbox: they pass${rounds(verification)}.`
            : `Aether ran them in the sandbox: they do NOT pass${verification.rounds > 1 ? ` after ${verification.rounds} rounds` : ""}.`}
      </p>
      {verification?.note && <p className="mb-2 text-sm wrap-anywhere text-amber-200">{verification.note}</p>}
      <ul className="space-y-1.5">
        {checks.map((check, i) => (
          <CheckItem key={`${i}:${check.command}`} check={check} />
        ))}
        {notRun.map((command) => (
          <li key={command} className="rounded-lg border border-dashed border-slate-700 px-3 py-2">
            <code className="font-mono text-xs wrap-anywhere text-slate-200">{command}</code>
          </li>
        ))}
      </ul>
    </div>
  );
}

/** The task's checks: every subtask's, run again by the synthesizer on the assembled repository. */
export function RepositoryChecks({ verification }: { verification: Verification }) {
  const checks = verification.checks ?? [];
  const failing = checks.filter((c) => !c.passed);
  return (
    <section
      aria-labelledby="repository-checks-heading"
      data-testid="repository-checks"
      data-passed={verification.passed}
      className={`rounded-2xl border p-4 sm:p-5 ${verification.passed ? "border-emerald-500/30 bg-emerald-950/20" : "border-rose-500/40 bg-rose-950/30"}`}
    >
      <div className="mb-2 flex flex-wrap items-center justify-between gap-2">
        <h2 id="repository-checks-heading" className="text-lg font-semibold">
          Repository checks
        </h2>
        <OutcomeBadge ok={verification.passed} label={verification.passed ? "passes" : "does not pass"} />
      </div>
      <p className={`font-medium ${verification.passed ? "text-emerald-100" : "text-rose-100"}`} data-testid="repository-verdict">
        {verification.passed ? "The repository passes its checks" : "The repository does NOT pass its checks"}
        {failing.length > 0 && (
          <>
            {": "}
            {failing.map((c, i) => (
              <span key={`${i}:${c.command}`}>
                {i > 0 && ", "}
                <code className="font-mono text-sm">{c.command}</code>
              </span>
            ))}
            {" failed"}
          </>
        )}
        .
      </p>
      <p className="mt-1 mb-3 text-sm text-slate-300">
        Every subtask's checks, run again on the assembled repository{rounds(verification)}.
      </p>
      {verification.note && <p className="mb-2 text-sm wrap-anywhere text-amber-200">{verification.note}</p>}
      <ul className="space-y-1.5">
        {checks.map((check, i) => (
          <CheckItem key={`${i}:${check.command}`} check={check} />
        ))}
      </ul>
    </section>
  );
}
