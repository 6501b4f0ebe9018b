import { useCallback, useEffect, useState } from "react";
import { ApiError, deleteAgent, fetchAgentTemplates, fetchAgents, type AgentRecord, type AgentTemplate } from "../api";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { Empty, ErrorState, Loading } from "../components/States";
import { ago } from "../format";
import { useDocumentTitle } from "../hooks";
import { Link } from "../router";

const POOL_REFRESH_MS = 3000;

const AGENT_STATUS: Record<AgentRecord["status"], string> = {
  starting: "text-sky-300",
  idle: "text-emerald-300",
  busy: "text-cyan-300",
  stopping: "text-amber-300",
  stopped: "text-slate-400",
  failed: "text-rose-300",
};

type Load<T> = { state: "loading" } | { state: "ready"; value: T } | { state: "error"; error: ApiError };

function failure(caught: unknown): ApiError {
  return caught instanceof ApiError ? caught : new ApiError(0, String(caught));
}

export function AgentsPage() {
  useDocumentTitle("Agent Hub");
  const [templates, setTemplates] = useState<Load<AgentTemplate[]>>({ state: "loading" });
  const [pool, setPool] = useState<Load<AgentRecord[]>>({ state: "loading" });
  const [doomed, setDoomed] = useState<AgentRecord | null>(null);
  const [deleting, setDeleting] = useState(false);
  const [deleteError, setDeleteError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const loadTemplates = useCallback(() => {
    setTemplates({ state: "loading" });
    fetchAgentTemplates().then(
      (value) => setTemplates({ state: "ready", value }),
      (caught) => setTemplates({ state: "error", error: failure(caught) }),
    );
  }, []);

  const refreshPool = useCallback(async () => {
    try {
      setPool({ state: "ready", value: await fetchAgents() });
    } catch (caught) {
      setPool({ state: "error", error: failure(caught) });
    }
  }, []);

  useEffect(loadTemplates, [loadTemplates]);
  useEffect(() => {
    void refreshPool();
    const timer = setInterval(() => void refreshPool(), POOL_REFRESH_MS);
    return () => clearInterval(timer);
  }, [refreshPool]);

  const confirmDelete = async () => {
    if (!doomed) return;
    setDeleting(true);
    setDeleteError(null);
    try {
      await deleteAgent(doomed.id);
      setNotice(`Agent ${doomed.name} is stopping.`);
      setDoomed(null);
      await refreshPool();
    } catch (caught) {
      setDeleteError(failure(caught).detail);
    } finally {
      setDeleting(false);
    }
  };

  return (
    <div className="space-y-8">
      <div>
        <h1 className="text-2xl font-semibold">Agent Hub</h1>
        <p className="mt-1 text-sm text-slate-300">
          The experts Jason hands subtasks to: the templates they are made from, and the agents running now.
        </p>
      </div>

      <section aria-labelledby="pool-heading" className="space-y-3">
        <h2 id="pool-heading" className="text-lg font-semibold">
          Agents pool
        </h2>
        <p role="status" aria-live="polite" className="text-sm text-emerald-300 empty:hidden">
          {notice}
        </p>
        {pool.state === "loading" ? (
          <Loading label="Loading the agent pool…" />
        ) : pool.state === "error" ? (
          pool.error.status === 404 ? (
            <Empty title="The agent pool is not available">This gateway does not serve GET /api/agents.</Empty>
          ) : (
            <ErrorState title="The agent pool could not be loaded" detail={pool.error.detail} onRetry={() => void refreshPool()} />
          )
        ) : pool.value.length === 0 ? (
          <Empty title="No agents running">Agents start when tasks need them.</Empty>
        ) : (
          <ul className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3" data-testid="agent-pool">
            {pool.value.map((agent) => (
              <AgentCard
                key={agent.id}
                agent={agent}
                onDelete={() => {
                  setDeleteError(null);
                  setNotice(null);
                  setDoomed(agent);
                }}
              />
            ))}
          </ul>
        )}
      </section>

      <section aria-labelledby="templates-heading" className="space-y-3">
        <h2 id="templates-heading" className="text-lg font-semibold">
          Expert templates
        </h2>
        {templates.state === "loading" ? (
          <Loading label="Loading the templates…" />
        ) : templates.state === "error" ? (
          <ErrorState title="The templates could not be loaded" detail={templates.error.detail} onRetry={loadTemplates} />
        ) : templates.value.length === 0 ? (
          <Empty title="No expert templates">Add templates with AETHER_AGENTS_DIR.</Empty>
        ) : (
          <ul className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3" data-testid="agent-templates">
            {templates.value.map((template) => (
              <li key={template.type} className="rounded-xl border border-slate-800 bg-slate-900/60 p-4">
                <div className="flex items-start justify-between gap-2">
                  <h3 className="font-medium text-slate-100">{template.name}</h3>
                  <span className="font-mono text-xs text-slate-400">{template.type}</span>
                </div>
                <p className="mt-1 text-sm text-slate-300">{template.description}</p>
                <ul className="mt-3 flex flex-wrap gap-1.5" aria-label="Tags">
                  {template.tags.slice(0, 8).map((tag) => (
                    <li key={tag} className="rounded-full bg-slate-800 px-2 py-0.5 text-xs text-slate-300">
                      {tag}
                    </li>
                  ))}
                </ul>
              </li>
            ))}
          </ul>
        )}
      </section>

      <ConfirmDialog
        open={doomed !== null}
        title={`Delete agent ${doomed?.name ?? ""}?`}
        confirmLabel={deleting ? "Deleting…" : "Delete agent"}
        busy={deleting}
        error={deleteError}
        onConfirm={() => void confirmDelete()}
        onCancel={() => setDoomed(null)}
      >
        {doomed && (
          <p>
            The {doomed.agent_type} agent <span className="font-mono text-slate-100">{doomed.id}</span> stops
            {doomed.current_subtask ? " after handing back its current subtask, which another agent picks up" : ""}. Jason and
            the other agents keep working.
          </p>
        )}
      </ConfirmDialog>
    </div>
  );
}

export function AgentCard({ agent, onDelete }: { agent: AgentRecord; onDelete: () => void }) {
  const master = agent.role === "master";
  return (
    <li
      data-testid="agent-card"
      data-agent={agent.id}
      className={`group relative rounded-xl border bg-slate-900/60 p-4 ${master ? "border-violet-500/40" : "border-slate-800"}`}
    >
      <div className="flex items-start justify-between gap-2">
        <div className="min-w-0">
          <h3 className="truncate font-medium text-slate-100" title={agent.name}>
            {agent.name}
          </h3>
          <p className="truncate font-mono text-xs text-slate-400">{agent.id}</p>
        </div>
        {master ? (
          <span className="rounded-full bg-violet-500/20 px-2 py-0.5 text-xs font-medium text-violet-200">Master</span>
        ) : agent.deletable ? (
          <button
            type="button"
            onClick={onDelete}
            aria-label={`Delete agent ${agent.name}`}
            title="Delete agent"
            className="rounded-lg p-1.5 text-slate-400 transition hover:bg-rose-500/15 hover:text-rose-300 focus-visible:text-rose-300 focus-visible:ring-2 focus-visible:ring-rose-400 focus-visible:outline-none sm:opacity-60 sm:group-hover:opacity-100 sm:focus-visible:opacity-100"
          >
            <TrashIcon />
          </button>
        ) : null}
      </div>
      <dl className="mt-3 grid grid-cols-2 gap-2 text-sm">
        <div>
          <dt className="text-xs text-slate-400">Type</dt>
          <dd className="truncate text-slate-200">{agent.agent_type}</dd>
        </div>
        <div>
          <dt className="text-xs text-slate-400">Status</dt>
          <dd className={`font-medium ${AGENT_STATUS[agent.status] ?? "text-slate-200"}`}>{master && agent.status === "idle" ? "Connected" : agent.status}</dd>
        </div>
        <div>
          <dt className="text-xs text-slate-400">Working on</dt>
          <dd className="truncate text-slate-200">
            {agent.current_task && agent.current_subtask ? (
              <Link to={`/tasks/${agent.current_task}`} className="link">
                {agent.current_subtask}
              </Link>
            ) : (
              "–"
            )}
          </dd>
        </div>
        <div>
          <dt className="text-xs text-slate-400">Subtasks done</dt>
          <dd className="text-slate-200 tabular-nums">{agent.subtasks_done}</dd>
        </div>
      </dl>
      <p className="mt-2 text-xs text-slate-400">
        {agent.backend} · seen {ago(agent.last_seen)}
      </p>
      {agent.error && <p className="mt-2 text-xs wrap-anywhere text-rose-300">{agent.error}</p>}
    </li>
  );
}

function TrashIcon() {
  return (
    <svg aria-hidden="true" viewBox="0 0 24 24" className="size-5" fill="none" stroke="currentColor" strokeWidth="1.8" strokeLinecap="round" strokeLinejoin="round">
      <path d="M4 7h16M10 11v6M14 11v6M6 7l1 12a2 2 0 0 0 2 2h6a2 2 0 0 0 2-2l1-12M9 7V4h6v3" />
    </svg>
  );
}
