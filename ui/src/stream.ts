// Live updates over the gateway's WebSocket streams, resumed after a dropped connection, and the
// pure reducers that fold stream messages into what the pages show.
import { apiKey, keyRefused } from "./auth";
import type {
  BoardStreamMessage,
  OrchestratorTaskSummary,
  StreamError,
  TaskEvent,
  TaskState,
  TaskStreamMessage,
  ToolStep,
} from "./api";
import { mergeSteps } from "./steps";

export type Connection = "connecting" | "live" | "reconnecting" | "ended" | "failed";

interface Message {
  type: string;
  id?: string | null;
  data?: unknown;
}

export interface StreamHandle {
  close(): void;
}

export function streamUrl(path: string, position: string | null, extra: Record<string, string> = {}): string {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams(extra);
  if (position !== null) query.set("after", position);
  const key = apiKey();
  if (key) query.set("access_token", key);
  return `${scheme}://${window.location.host}${path}${query.size ? `?${query}` : ""}`;
}

/**
 * Opens `path` as a WebSocket and keeps it open: after a drop it reconnects with `?after=` set to
 * the id of the last message received, so the server sends exactly what was missed. An `error`
 * message (unknown task, bad position) or an end message stops it for good.
 */
export function openStream<M extends Message>(
  path: string,
  handlers: {
    onMessage: (message: M) => void;
    onConnection?: (state: Connection, error?: StreamError) => void;
    isEnd?: (message: M) => boolean;
    query?: Record<string, string>;
  },
): StreamHandle {
  let socket: WebSocket | null = null;
  let position: string | null = null;
  let closed = false;
  let failures = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const connect = () => {
    handlers.onConnection?.(failures ? "reconnecting" : "connecting");
    const current = new WebSocket(streamUrl(path, position, handlers.query));
    socket = current;
    current.onopen = () => {
      failures = 0;
      handlers.onConnection?.("live");
    };
    current.onmessage = (frame) => {
      const message = JSON.parse(String(frame.data)) as M;
      if (message.id !== null && message.id !== undefined) position = message.id;
      if (message.type === "error") {
        closed = true;
        if ((message.data as StreamError).status === 401) keyRefused();
        handlers.onConnection?.("failed", message.data as StreamError);
        current.close();
        return;
      }
      handlers.onMessage(message);
      if (handlers.isEnd?.(message)) {
        closed = true;
        handlers.onConnection?.("ended");
      }
    };
    current.onclose = () => {
      if (closed || socket !== current) return;
      failures += 1;
      handlers.onConnection?.("reconnecting");
      // Back off up to 5 s, with jitter so a restarted gateway is not hit by every tab at once.
      const delay = Math.min(5000, 250 * 2 ** Math.min(failures, 5)) * (0.75 + Math.random() / 2);
      timer = setTimeout(connect, delay);
    };
  };
  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      socket?.close();
    },
  };
}

// -- one task ------------------------------------------------------------------------------------

export interface TaskView {
  task: TaskState | null;
  events: TaskEvent[];
  /** The steps that arrived live, per subtask (the steps route has the ones before them). */
  steps: Record<string, ToolStep[]>;
  ended: boolean;
}

export const emptyTaskView: TaskView = { task: null, events: [], steps: {}, ended: false };

export function reduceTask(view: TaskView, message: TaskStreamMessage): TaskView {
  switch (message.type) {
    case "task.event": {
      const last = view.events.at(-1);
      // The server never repeats an event; this guards against a client bug replaying one.
      if (last && message.data.seq <= last.seq) return view;
      return { ...view, events: [...view.events, message.data] };
    }
    case "task.state":
      if (view.task && message.data.revision <= view.task.revision) return view;
      return { ...view, task: message.data };
    case "task.step": {
      const subtask = message.data.subtask_id;
      return { ...view, steps: { ...view.steps, [subtask]: mergeSteps(view.steps[subtask], [message.data]) } };
    }
    case "task.end":
      return { ...view, ended: true };
    default:
      return view;
  }
}

// -- the board -----------------------------------------------------------------------------------

export interface BoardView {
  tasks: Map<string, OrchestratorTaskSummary>;
  ready: boolean;
}

export const emptyBoard: BoardView = { tasks: new Map(), ready: false };

export function reduceBoard(board: BoardView, messages: BoardStreamMessage[]): BoardView {
  let tasks = board.tasks;
  let ready = board.ready;
  for (const message of messages) {
    if (message.type === "board.task") {
      const known = tasks.get(message.data.id);
      if (known && known.revision >= message.data.revision) continue;
      if (tasks === board.tasks) tasks = new Map(tasks);
      tasks.set(message.data.id, message.data);
    } else if (message.type === "board.removed") {
      if (!tasks.has(message.data.id)) continue;
      if (tasks === board.tasks) tasks = new Map(tasks);
      tasks.delete(message.data.id);
    } else if (message.type === "board.ready") {
      ready = true;
    }
  }
  return tasks === board.tasks && ready === board.ready ? board : { tasks, ready };
}

export function newestFirst(board: BoardView): OrchestratorTaskSummary[] {
  return [...board.tasks.values()].sort(
    (a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || b.id.localeCompare(a.id),
  );
}
