// The gateway's REST API, typed from its OpenAPI document (src/gen/openapi.ts is generated from
// ui/openapi.json by `make api-types`; a test fails when either drifts from the gateway).
import { apiKey, keyRefused } from "./auth";
import type { components, paths } from "./gen/openapi";

type Schemas = components["schemas"];
type JsonOf<P extends keyof paths, M extends "get" | "post" | "delete", S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { "application/json": infer T } } };
}
  ? T
  : never;

export type OrchestratorTask = JsonOf<"/api/orchestrate/task/{task_id}", "get", 200>;
export type OrchestratorSubtask = Schemas["SubtaskBody"];
export type OrchestratorTaskSummary = Schemas["TaskSummary"];
export type AgentTemplate = Schemas["AgentTemplateBody"];
export type TaskStatus = Schemas["TaskStatus"];
export type SubtaskStatus = Schemas["SubtaskStatus"];
export type TaskEvent = Schemas["TaskEventBody"];
export type TaskState = Schemas["TaskStateBody"];
export type Usage = Schemas["Usage"];
export type StreamError = Schemas["StreamError"];
export type ToolStep = Schemas["ToolStep"];
export type Verification = Schemas["Verification"];
export type CheckRun = Schemas["CheckRun"];

export type TaskStreamMessage =
  | Schemas["TaskEventMessage"]
  | Schemas["TaskStateMessage"]
  | Schemas["TaskStepMessage"]
  | Schemas["TaskEndMessage"]
  | Schemas["StreamErrorMessage"];
export type BoardStreamMessage =
  | Schemas["BoardTaskMessage"]
  | Schemas["BoardRemovedMessage"]
  | Schemas["BoardReadyMessage"]
  | Schemas["StreamErrorMessage"];

/** An agent of the live pool: a master (Jason) or an expert; only experts are `deletable`. */
export type AgentRecord = JsonOf<"/api/agents", "get", 200>[number];
export type AgentStop = Schemas["AgentStopBody"];

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(status ? `${detail} (HTTP ${status})` : detail);
  }
}

async function request<T>(path: string, init?: RequestInit & { key?: string }): Promise<T> {
  const key = init?.key ?? apiKey();
  let response: Response;
  try {
    response = await fetch(path, {
      ...init,
      headers: {
        accept: "application/json",
        ...(init?.body ? { "content-type": "application/json" } : {}),
        ...(key ? { authorization: `Bearer ${key}` } : {}),
      },
    });
  } catch {
    throw new ApiError(0, "The Aether gateway cannot be reached");
  }
  if (response.status === 401 && init?.key === undefined) keyRefused();
  if (!response.ok) {
    let detail = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (typeof body?.detail === "string") detail = body.detail;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, detail);
  }
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export function submitOrchestratorTask(
  description: string,
  masterDeploymentId?: string | null,
  options: { requirePlanApproval?: boolean } = {},
): Promise<JsonOf<"/api/orchestrate/task", "post", 202>> {
  // The masters are per deployment (the OpenAPI names this one's), so any id is sent as given.
  const body: { description: string; master_deployment_id?: string; require_plan_approval?: boolean } = { description };
  if (masterDeploymentId) body.master_deployment_id = masterDeploymentId;
  if (options.requirePlanApproval) body.require_plan_approval = true;
  return request("/api/orchestrate/task", { method: "POST", body: JSON.stringify(body) });
}

const taskPath = (taskId: string) => `/api/orchestrate/task/${encodeURIComponent(taskId)}`;

/** Runs the plan of a task awaiting approval: Jason's, or `plan` instead (a 422 names every problem). */
export function approvePlan(taskId: string, plan?: Record<string, unknown>): Promise<JsonOf<"/api/orchestrate/task/{task_id}/approve", "post", 200>> {
  const body: { plan?: Record<string, unknown> } = plan ? { plan } : {};
  return request(`${taskPath(taskId)}/approve`, { method: "POST", body: JSON.stringify(body) });
}

/** Ends a task awaiting approval: cancelled, with the reason; nothing of it ran. */
export function rejectPlan(taskId: string, reason: string): Promise<JsonOf<"/api/orchestrate/task/{task_id}/reject", "post", 200>> {
  const body: { reason: string } = { reason };
  return request(`${taskPath(taskId)}/reject`, { method: "POST", body: JSON.stringify(body) });
}

/** Answers a subtask's open question: its expert goes on with the answer. */
export function answerQuestion(
  taskId: string,
  subtaskId: string,
  answer: string,
): Promise<JsonOf<"/api/orchestrate/task/{task_id}/subtasks/{subtask_id}/answer", "post", 200>> {
  const body: { answer: string } = { answer };
  return request(`${taskPath(taskId)}/subtasks/${encodeURIComponent(subtaskId)}/answer`, { method: "POST", body: JSON.stringify(body) });
}

export function fetchOrchestratorTask(taskId: string): Promise<OrchestratorTask> {
  return request(`/api/orchestrate/task/${encodeURIComponent(taskId)}`);
}

/** Every tool call and check of one subtask, each of its runs, oldest first. */
export function fetchSubtaskSteps(taskId: string, subtaskId: string): Promise<ToolStep[]> {
  return request(`/api/orchestrate/task/${encodeURIComponent(taskId)}/subtasks/${encodeURIComponent(subtaskId)}/steps`);
}

export function fetchOrchestratorTasks(
  options: { limit?: number; offset?: number; status?: TaskStatus } = {},
): Promise<JsonOf<"/api/orchestrate/tasks", "get", 200>> {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(options)) if (value !== undefined) query.set(key, String(value));
  return request(`/api/orchestrate/tasks${query.size ? `?${query}` : ""}`);
}

/** Whether the gateway accepts `key` (a cheap authenticated call). */
export async function checkApiKey(key: string): Promise<void> {
  await request("/api/orchestrate/tasks?limit=1", { key });
}

export function fetchAgentTemplates(): Promise<JsonOf<"/api/orchestrate/agents", "get", 200>> {
  return request("/api/orchestrate/agents");
}

export function fetchAgents(): Promise<JsonOf<"/api/agents", "get", 200>> {
  return request("/api/agents");
}

/** Stops an expert agent (202 while it stops); 404 for an unknown agent, 409 for a master. */
export function deleteAgent(agentId: string): Promise<JsonOf<"/api/agents/{agent_id}", "delete", 202>> {
  return request(`/api/agents/${encodeURIComponent(agentId)}`, { method: "DELETE" });
}

export type ClientConfig = JsonOf<"/api/config", "get", 200>;

let clientConfig: Promise<ClientConfig> | null = null;

/** The deployment's client settings (the Jaeger URL), fetched once per page load. */
export function fetchClientConfig(): Promise<ClientConfig> {
  clientConfig ??= request<ClientConfig>("/api/config").catch((error: unknown) => {
    clientConfig = null; // not cached: the next caller asks again
    throw error;
  });
  return clientConfig;
}

/** Where Jaeger shows a trace, or null without a Jaeger URL or a trace id. */
export function traceUrl(jaegerUrl: string | null | undefined, traceId: string | null | undefined): string | null {
  if (!jaegerUrl || !traceId) return null;
  return `${jaegerUrl.replace(/\/+$/, "")}/trace/${encodeURIComponent(traceId)}`;
}

export const streamPaths = {
  task: (taskId: string) => `/api/orchestrate/task/${encodeURIComponent(taskId)}/stream`,
  board: "/api/orchestrate/tasks/stream",
} satisfies Record<string, keyof paths | ((id: string) => string)>;

export type TaskWorkspace = JsonOf<"/api/orchestrate/task/{task_id}/files", "get", 200>;

/** The task's files and repository, with download links the gateway signed: an anchor cannot
 * send the key, and no key may ride in a URL (they expire after `links_expire_in_s`). */
export function fetchTaskWorkspace(taskId: string): Promise<TaskWorkspace> {
  return request<TaskWorkspace>(`/api/orchestrate/task/${encodeURIComponent(taskId)}/files`);
}

/** One file of a task's workspace as text, the version `writtenBy` (a subtask id) wrote. */
export async function fetchTaskFile(taskId: string, path: string, writtenBy: string): Promise<string> {
  const key = apiKey();
  const url = `/api/orchestrate/task/${encodeURIComponent(taskId)}/files/${path.split("/").map(encodeURIComponent).join("/")}?written_by=${encodeURIComponent(writtenBy)}`;
  let response: Response;
  try {
    response = await fetch(url, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  } catch {
    throw new ApiError(0, "The Aether gateway cannot be reached");
  }
  if (!response.ok) throw new ApiError(response.status, response.statusText || "request failed");
  return response.text();
}
