import { useEffect, useId, useRef, useState, type ReactNode } from "react";
import type { OrchestratorSubtask, TaskEvent, TaskState, ToolStep } from "../api";
import { Markdown } from "../components/Markdown";
import { PlanGraph } from "../components/PlanGraph";
import { ConnectionBadge, Empty, ErrorState, Loading, Spinner } from "../components/States";
import { StatusBadge, subtaskLook, taskLook } from "../components/Status";
import { RepositoryChecks, SubtaskChecks, SubtaskSteps } from "../components/Steps";
import { ApprovalPanel, QuestionAnswered, QuestionPanel } from "../components/Waiting";
import { clock, duration, firstLine, seconds, tokens } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useTaskStream } from "../live";
import { Link } from "../router";
import { fetchClientConfig, fetchTaskFile, fetchTaskWorkspace, traceUrl, type TaskWorkspace } from "../api";

const RUNNING = new Set(["executing", "creating_agent"]);

export function TaskPage({ taskId }: { taskId: string }) {
  const { task, events, steps, connection, error, reconnects, retry } = useTaskStream(taskId);
  useDocumentTitle(task ? firstLine(task.description).slice(0, 60) : "Task");
  const active = !!task && !["completed", "failed", "cancelled"].includes(task.status);
  const now = useNow(active);
  const [picked, setPicked] = useState<string | null>(null);

  if (error && !task) {
    return (
      <div className="space-y-4">
        <BackLink />
        <ErrorState
          title={error.status === 404 ? "No such task" : "This task cannot be followed"}
          detail={error.status === 404 ? `There is no task with id ${taskId}. It may have been removed, or the link is mistyped.` : error.detail}
          onRetry={error.status === 404 ? undefined : retry}
        />
      </div>
    );
  }
  if (!task) {
    return (
      <div className="space-y-4">
        <BackLink />
        <Loading label={connection === "reconnecting" ? "Reconnecting to the gateway…" : "Loading the task…"} />
      </div>
    );
  }

  const selected = task.subtasks.find((s) => s.id === picked) ?? defaultSubtask(task.subtasks);
  const questions = task.subtasks.filter((s) => s.status === "awaiting_input");
  return (
    <div className="min-w-0 space-y-6">
      <TaskHeader task={task} now={now} connection={connection} />
      {task.error && (
        <ErrorState
          title={task.status === "failed" ? "The task failed" : task.status === "cancelled" ? "The task was cancelled" : "Some parts failed"}
          detail={task.error}
        />
      )}
      {task.status === "awaiting_approval" && <ApprovalPanel task={task} />}
      {questions.length > 0 && (
        <section aria-labelledby="questions-heading" className="space-y-3">
          <h2 id="questions-heading" className="text-lg font-semibold">
            {questions.length === 1 ? "A question for you" : `${questions.length} questions for you`}
          </h2>
          {questions.map((subtask) => (
            <QuestionPanel key={`${subtask.id}:${subtask.questions}`} taskId={task.id} subtask={subtask} onSelect={setPicked} />
          ))}
        </section>
      )}

      <section aria-labelledby="plan-heading" className="space-y-3">
        <div className="flex flex-wrap items-baseline justify-between gap-2">
          <h2 id="plan-heading" className="text-lg font-semibold">
            Plan
          </h2>
          {task.subtasks.length > 0 && (
            <p className="text-sm text-slate-300">
              {task.progress.completed} of {task.progress.total} subtasks completed
              {task.progress.failed ? `, ${task.progress.failed} failed` : ""}
            </p>
          )}
        </div>
        {typeof task.plan?.analysis === "string" && task.plan.analysis && (
          <p className="text-sm text-slate-300">{task.plan.analysis}</p>
        )}
        {task.subtasks.length > 0 ? (
          <PlanGraph subtasks={task.subtasks} selected={selected?.id ?? null} onSelect={setPicked} now={now} />
        ) : task.status === "pending" || task.status === "planning" ? (
          <Loading label="Jason is planning the task…" />
        ) : (
          <Empty title="No plan">The task ended before a plan was made.</Empty>
        )}
      </section>

      {task.final_result && (
        <section aria-labelledby="final-heading" className="rounded-2xl border border-emerald-500/30 bg-emerald-950/20 p-4 sm:p-5">
          <h2 id="final-heading" className="mb-3 text-lg font-semibold text-emerald-100">
            Final result
          </h2>
          <Markdown text={task.final_result} />
        </section>
      )}
      {task.status === "synthesizing" && <Loading label="Jason is putting the results together…" />}
      {task.repository && <Downloads task={task} />}
      {task.verification && <RepositoryChecks verification={task.verification} />}

      <div className="grid grid-cols-1 gap-6 lg:grid-cols-5">
        <div className="min-w-0 space-y-6 lg:col-span-3">
          {selected && (
            <SubtaskPanel taskId={task.id} subtask={selected} now={now} onSelect={setPicked} liveSteps={steps[selected.id]} reconnects={reconnects} />
          )}
          {task.subtasks.length > 0 && <UsageTable task={task} now={now} selected={selected?.id} onSelect={setPicked} />}
        </div>
        <LogPanel events={events} subtaskId={selected?.id ?? null} className="min-w-0 lg:col-span-2" />
      </div>
    </div>
  );
}

/** The signed download links of the task's repository, fetched again before they expire. */
function useDownloadLinks(taskId: string, head: string): TaskWorkspace["repository"] | null {
  const [links, setLinks] = useState<TaskWorkspace["repository"] | null>(null);
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = () =>
      fetchTaskWorkspace(taskId)
        .then((workspace) => {
          if (!live) return;
          setLinks(workspace.repository ?? null);
          const lifetime = workspace.repository?.links_expire_in_s;
          if (lifetime) timer = setTimeout(load, (lifetime * 1000) / 2);
        })
        .catch(() => {
          if (live) timer = setTimeout(load, 5000);
        });
    void load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [taskId, head]);
  return links;
}

function Downloads({ task }: { task: TaskState }) {
  const repository = task.repository!;
  const links = useDownloadLinks(task.id, repository.head);
  const link = (file: "archive" | "bundle") => (file === "archive" ? links?.archive_url : links?.bundle_url);
  if (repository.error) {
    return <ErrorState title="No repository" detail={`The repository could not be assembled: ${repository.error}`} />;
  }
  return (
    <section aria-labelledby="repository-heading" className="rounded-2xl border border-slate-700 bg-slate-900/60 p-4 sm:p-5">
      <h2 id="repository-heading" className="mb-2 text-lg font-semibold">
        Repository
      </h2>
      <p className="mb-3 text-sm text-slate-300">
        {repository.files} files, {repository.commits?.length ?? 0} commits: one per subtask in dependency order, then Jason's.
      </p>
      <div className="flex flex-wrap gap-3">
        <a className="btn-secondary" href={link("archive")} aria-disabled={!links} download={`aether-${task.id}.tar.gz`}>
          Download .tar.gz
        </a>
        <a className="btn-secondary" href={link("bundle")} aria-disabled={!links} download={`aether-${task.id}.bundle`}>
          Download git bundle
        </a>
      </div>
      <p className="mt-3 text-xs text-slate-400">
        <code>git clone aether-{task.id}.bundle</code> gives the repository with its history.
      </p>
    </section>
  );
}

function defaultSubtask(subtasks: TaskState["subtasks"]) {
  return subtasks.find((s) => s.status === "awaiting_input") ?? subtasks.find((s) => RUNNING.has(s.status)) ?? subtasks.find((s) => s.status === "failed" && !s.blocked_by.length) ?? subtasks[0];
}

function BackLink() {
  return (
    <Link to="/" className="link inline-flex items-center gap-1 text-sm">
      <span aria-hidden="true">←</span> Mission Board
    </Link>
  );
}

function TaskHeader({ task, now, connection }: { task: TaskState; now: number; connection: Parameters<typeof ConnectionBadge>[0]["state"] }) {
  const elapsed = seconds(task.created_at, task.completed_at, now);
  const title = firstLine(task.description);
  const more = task.description.trim() !== title;
  return (
    <header className="space-y-3">
      <div className="flex items-center justify-between gap-3">
        <BackLink />
        <ConnectionBadge state={connection} />
      </div>
      <div className="flex flex-wrap items-start justify-between gap-3">
        <h1 className="min-w-0 flex-1 text-xl font-semibold wrap-anywhere sm:text-2xl">{title}</h1>
        <StatusBadge look={taskLook(task.status)} className="mt-1 text-sm" />
      </div>
      {more && (
        <details className="text-sm text-slate-300">
          <summary className="cursor-pointer text-slate-200">Full description</summary>
          <pre className="mt-2 font-sans wrap-anywhere whitespace-pre-wrap">{task.description}</pre>
        </details>
      )}
      <dl className="grid grid-cols-2 gap-3 sm:grid-cols-4">
        <Fact label="Started">{clock(task.created_at)}</Fact>
        <Fact label={task.completed_at ? "Took" : "Running for"}>{duration(elapsed)}</Fact>
        <Fact label="Tokens">
          {tokens(task.usage.total_tokens)}
          <span className="block text-xs font-normal text-slate-400">
            {tokens(task.usage.prompt_tokens)} in · {tokens(task.usage.completion_tokens)} out · {task.usage.calls} calls
          </span>
        </Fact>
        <Fact label="Master">{task.master_deployment_id}</Fact>
      </dl>
      <TraceLink traceId={task.trace_id} />
    </header>
  );
}

/** The task's trace in Jaeger, when the deployment names a Jaeger URL and the task was traced. */
function TraceLink({ traceId }: { traceId: string | null | undefined }) {
  const [jaegerUrl, setJaegerUrl] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    fetchClientConfig()
      .then((config) => live && setJaegerUrl(config.jaeger_url ?? null))
      .catch(() => undefined); // no link is the only consequence
    return () => {
      live = false;
    };
  }, []);
  const href = traceUrl(jaegerUrl, traceId);
  if (!href) return null;
  return (
    <p className="text-sm">
      <a className="link" href={href} target="_blank" rel="noreferrer" data-testid="trace-link">
        View this task's trace in Jaeger <span aria-hidden="true">↗</span>
      </a>
      <span className="ml-2 font-mono text-xs text-slate-400">{traceId}</span>
    </p>
  );
}

function Fact({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="rounded-xl border border-slate-800 bg-slate-900/50 px-3 py-2">
      <dt className="text-xs text-slate-400">{label}</dt>
      <dd className="mt-0.5 font-medium text-slate-100 tabular-nums">{children}</dd>
    </div>
  );
}

type Subtask = TaskState["subtasks"][number];

function SubtaskPanel({
  taskId,
  subtask,
  now,
  onSelect,
  liveSteps,
  reconnects,
}: {
  taskId: string;
  subtask: Subtask;
  now: number;
  onSelect: (id: string) => void;
  liveSteps?: ToolStep[];
  reconnects: number;
}) {
  const look = subtaskLook(subtask);
  const headingId = useId();
  const running = RUNNING.has(subtask.status);
  const took = subtask.duration_ms !== null && subtask.duration_ms !== undefined ? subtask.duration_ms / 1000 : running ? seconds(subtask.started_at, null, now) : null;
  return (
    <section aria-labelledby={headingId} data-testid="subtask-panel" data-subtask={subtask.id} className="rounded-2xl border border-slate-800 bg-slate-900/50 p-4 sm:p-5">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h2 id={headingId} className="text-lg font-semibold break-all">
          Subtask {subtask.id}
        </h2>
        <StatusBadge look={look} />
      </div>
      <p className="mt-2 text-sm wrap-anywhere text-slate-200">{subtask.description}</p>
      <dl className="mt-3 grid grid-cols-2 gap-x-4 gap-y-2 text-sm sm:grid-cols-3">
        <Detail label="Agent type">{subtask.agent_type}</Detail>
        <Detail label="Agent">{subtask.agent_id ?? "–"}</Detail>
        <Detail label="Duration">{duration(took)}</Detail>
        <Detail label="Tokens">
          {subtask.usage.total_tokens ? `${tokens(subtask.usage.total_tokens)} (${tokens(subtask.usage.prompt_tokens)} in, ${tokens(subtask.usage.completion_tokens)} out)` : "–"}
        </Detail>
        <Detail label="Attempts">{subtask.attempts || "–"}</Detail>
        <Detail label="Model">{subtask.model ?? "–"}</Detail>
        <Detail label="Tool calls">{subtask.steps ? `${subtask.steps} (${subtask.tool_errors} ${subtask.tool_errors === 1 ? "error" : "errors"})` : "–"}</Detail>
      </dl>
      {subtask.depends_on.length > 0 && (
        <div className="mt-3 flex flex-wrap items-center gap-1.5 text-sm">
          <span className="text-slate-400">Depends on</span>
          {subtask.depends_on.map((id) => (
            <button key={id} type="button" className="chip" onClick={() => onSelect(id)}>
              {id}
            </button>
          ))}
        </div>
      )}
      <div className="mt-4 border-t border-slate-800 pt-4">
        <h3 className="mb-2 text-sm font-semibold text-slate-200">Result</h3>
        {subtask.result ? (
          <Markdown text={subtask.result} />
        ) : subtask.error ? (
          <p role="alert" className="text-sm wrap-anywhere text-rose-200">
            {subtask.error}
          </p>
        ) : subtask.status === "awaiting_input" ? (
          <p className="text-sm text-orange-200">Its expert asked a question (above) and waits for your answer; no agent is held meanwhile.</p>
        ) : running ? (
          <p className="flex items-center gap-2 text-sm text-slate-300">
            <Spinner /> A {subtask.agent_type} agent is working on it…
          </p>
        ) : subtask.queued_at ? (
          <p className="text-sm text-slate-300">Queued: waiting for a free {subtask.agent_type} agent.</p>
        ) : (
          <p className="text-sm text-slate-300">
            {subtask.depends_on.length ? `Starts when ${subtask.depends_on.join(", ")} ${subtask.depends_on.length > 1 ? "are" : "is"} done.` : "Starts shortly."}
          </p>
        )}
      </div>
      <QuestionAnswered subtask={subtask} />
      <SubtaskChecks subtask={subtask} />
      {subtask.files.length > 0 && <FileList taskId={taskId} subtask={subtask} />}
      <SubtaskSteps taskId={taskId} subtask={subtask} live={liveSteps} reconnects={reconnects} />
    </section>
  );
}

const LANGUAGES: Record<string, string> = {
  py: "python", ts: "typescript", tsx: "typescript", js: "javascript", jsx: "javascript", sql: "sql",
  md: "markdown", yml: "yaml", yaml: "yaml", json: "json", sh: "bash", toml: "ini", css: "css", html: "xml",
};

function languageOf(path: string): string {
  const name = path.split("/").pop() ?? path;
  if (name === "Dockerfile") return "dockerfile";
  return LANGUAGES[name.split(".").pop() ?? ""] ?? "";
}

/** A code block of `text` whose fence no line of the file can close (files are LLM output). */
function fenced(text: string, language: string): string {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  return `${fence}${language}\n${text}\n${fence}`;
}

function FileList({ taskId, subtask }: { taskId: string; subtask: Subtask }) {
  const [open, setOpen] = useState<string | null>(null);
  const [content, setContent] = useState<{ path: string; text?: string; error?: string } | null>(null);
  useEffect(() => {
    if (!open) return;
    let live = true;
    setContent({ path: open });
    fetchTaskFile(taskId, open, subtask.id).then(
      (text) => live && setContent({ path: open, text }),
      (error: Error) => live && setContent({ path: open, error: error.message }),
    );
    return () => {
      live = false;
    };
  }, [taskId, subtask.id, open]);
  return (
    <div className="mt-4 border-t border-slate-800 pt-4" data-testid="subtask-files">
      <h3 className="mb-2 text-sm font-semibold text-slate-200">Files written</h3>
      <ul className="flex flex-wrap gap-1.5">
        {subtask.files.map((file) => (
          <li key={file.path}>
            <button type="button" className="chip" aria-pressed={open === file.path} onClick={() => setOpen(open === file.path ? null : file.path)}>
              {file.path} <span className="text-slate-400">({file.size} B)</span>
            </button>
          </li>
        ))}
      </ul>
      {content && (
        <div className="mt-3" data-testid="file-content" data-path={content.path}>
          {content.error ? (
            <p role="alert" className="text-sm text-rose-200">{content.error}</p>
          ) : content.text === undefined ? (
            <Loading label={`Loading ${content.path}…`} />
          ) : (
            <Markdown text={fenced(content.text, languageOf(content.path))} />
          )}
        </div>
      )}
    </div>
  );
}

function Detail({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="min-w-0">
      <dt className="text-xs text-slate-400">{label}</dt>
      <dd className="truncate text-slate-100" title={typeof children === "string" ? children : undefined}>
        {children}
      </dd>
    </div>
  );
}

function UsageTable({ task, now, selected, onSelect }: { task: TaskState; now: number; selected?: string; onSelect: (id: string) => void }) {
  return (
    <section aria-labelledby="usage-heading" className="rounded-2xl border border-slate-800 bg-slate-900/50 p-4 sm:p-5">
      <h2 id="usage-heading" className="mb-3 text-lg font-semibold">
        Durations and tokens
      </h2>
      <div className="overflow-x-auto">
        <table className="w-full min-w-[28rem] text-left text-sm">
          <thead className="text-xs text-slate-400">
            <tr>
              <th scope="col" className="py-1.5 pr-3 font-medium">Subtask</th>
              <th scope="col" className="py-1.5 pr-3 font-medium">Agent type</th>
              <th scope="col" className="py-1.5 pr-3 font-medium">Status</th>
              <th scope="col" className="py-1.5 pr-3 text-right font-medium">Duration</th>
              <th scope="col" className="py-1.5 text-right font-medium">Tokens</th>
            </tr>
          </thead>
          <tbody>
            {task.subtasks.map((subtask: OrchestratorSubtask | Subtask) => {
              const look = subtaskLook(subtask);
              const took = subtask.duration_ms != null ? subtask.duration_ms / 1000 : RUNNING.has(subtask.status) ? seconds(subtask.started_at, null, now) : null;
              return (
                <tr key={subtask.id} className={`border-t border-slate-800 ${subtask.id === selected ? "bg-slate-800/60" : ""}`}>
                  <td className="py-1.5 pr-3">
                    <button type="button" className="link font-mono text-xs" onClick={() => onSelect(subtask.id)} aria-pressed={subtask.id === selected}>
                      {subtask.id}
                    </button>
                  </td>
                  <td className="py-1.5 pr-3 text-slate-200">{subtask.agent_type}</td>
                  <td className="py-1.5 pr-3">
                    <StatusBadge look={look} />
                  </td>
                  <td className="py-1.5 pr-3 text-right text-slate-200 tabular-nums">{duration(took)}</td>
                  <td className="py-1.5 text-right text-slate-200 tabular-nums">{subtask.usage.total_tokens ? tokens(subtask.usage.total_tokens) : "–"}</td>
                </tr>
              );
            })}
          </tbody>
          <tfoot>
            <tr className="border-t border-slate-700 text-slate-100">
              <th scope="row" colSpan={3} className="py-1.5 pr-3 text-left font-medium">
                Whole task (planning and synthesis included)
              </th>
              <td className="py-1.5 pr-3 text-right tabular-nums">{duration(seconds(task.created_at, task.completed_at, now))}</td>
              <td className="py-1.5 text-right tabular-nums">{tokens(task.usage.total_tokens)}</td>
            </tr>
          </tfoot>
        </table>
      </div>
    </section>
  );
}

const LEVEL = { info: "text-slate-200", warning: "text-amber-300", error: "text-rose-300" } as const;

function LogPanel({ events, subtaskId, className = "" }: { events: TaskEvent[]; subtaskId: string | null; className?: string }) {
  const [onlySubtask, setOnlySubtask] = useState(false);
  const list = useRef<HTMLOListElement>(null);
  const stick = useRef(true);
  const shown = onlySubtask && subtaskId ? events.filter((e) => e.subtask_id === subtaskId) : events;

  useEffect(() => {
    const element = list.current;
    if (element && stick.current) element.scrollTop = element.scrollHeight;
  }, [shown.length]);

  return (
    <section aria-labelledby="log-heading" className={`flex flex-col rounded-2xl border border-slate-800 bg-slate-900/50 p-4 sm:p-5 ${className}`}>
      <div className="mb-3 flex flex-wrap items-center justify-between gap-2">
        <h2 id="log-heading" className="text-lg font-semibold">
          Log <span className="text-sm font-normal text-slate-400 tabular-nums">({events.length})</span>
        </h2>
        {subtaskId && (
          <label className="flex items-center gap-2 text-sm text-slate-300">
            <input type="checkbox" checked={onlySubtask} onChange={(e) => setOnlySubtask(e.target.checked)} className="accent-cyan-400" />
            Only {subtaskId}
          </label>
        )}
      </div>
      {shown.length === 0 ? (
        <p className="text-sm text-slate-400">No log entries yet.</p>
      ) : (
        <ol
          ref={list}
          tabIndex={0}
          aria-label="Task log"
          data-testid="task-log"
          onScroll={(e) => {
            const el = e.currentTarget;
            stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
          }}
          className="max-h-[28rem] min-h-0 flex-1 space-y-1 overflow-y-auto pr-1 font-mono text-xs focus-visible:ring-2 focus-visible:ring-cyan-400 focus-visible:outline-none"
        >
          {shown.map((event) => (
            <li key={event.seq} data-seq={event.seq} className={`wrap-anywhere ${LEVEL[event.level]}`}>
              <time dateTime={event.at} className="mr-2 text-slate-400">
                {clock(event.at)}
              </time>
              {event.message}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
