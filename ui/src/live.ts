// React hooks over the live streams, and the render marks that latency measurements read.
import { useEffect, useReducer, useRef, useState } from "react";
import { streamPaths, type BoardStreamMessage, type StreamError, type TaskStreamMessage } from "./api";
import { emptyBoard, emptyTaskView, openStream, reduceBoard, reduceTask, type Connection } from "./stream";

/**
 * Records when a change reached the screen: `performance.mark("aether:render", {detail})` on the
 * frame after React committed it. A standard API (Real User Monitoring reads the same marks); the
 * end-to-end test compares these with the KV revisions' timestamps.
 */
export function markRendered(view: "task" | "board", changes: { task: string; revision: number }[]): void {
  if (!changes.length || typeof performance?.mark !== "function") return;
  requestAnimationFrame(() => performance.mark("aether:render", { detail: { view, changes } }));
}

export function useTaskStream(taskId: string) {
  const [view, dispatch] = useReducer(reduceTask, emptyTaskView);
  const [connection, setConnection] = useState<Connection>("connecting");
  const [error, setError] = useState<StreamError | null>(null);
  const [attempt, setAttempt] = useState(0);
  // Live steps are not part of the resume: what fetched them counts the reconnections to fetch again.
  const [reconnects, setReconnects] = useState(0);

  useEffect(() => {
    setError(null);
    let dropped = false;
    const handle = openStream<TaskStreamMessage>(streamPaths.task(taskId), {
      onMessage: dispatch,
      onConnection: (state, failure) => {
        setConnection(state);
        if (failure) setError(failure);
        if (state === "reconnecting") dropped = true;
        if (state === "live" && dropped) {
          dropped = false;
          setReconnects((n) => n + 1);
        }
      },
      isEnd: (message) => message.type === "task.end",
    });
    return () => handle.close();
  }, [taskId, attempt]);

  const revision = view.task?.revision;
  useEffect(() => {
    if (revision !== undefined) markRendered("task", [{ task: taskId, revision }]);
  }, [taskId, revision]);

  return { ...view, connection, error, reconnects, retry: () => setAttempt((n) => n + 1) };
}

export function useBoardStream(limit = 100) {
  const [board, setBoard] = useState(emptyBoard);
  const [connection, setConnection] = useState<Connection>("connecting");
  const [error, setError] = useState<StreamError | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    setError(null);
    const handle = openStream<BoardStreamMessage>(streamPaths.board, {
      onMessage: (message) => setBoard((current) => reduceBoard(current, [message])),
      onConnection: (state, failure) => {
        setConnection(state);
        if (failure) setError(failure);
      },
      query: { limit: String(limit) },
    });
    return () => handle.close();
  }, [limit, attempt]);

  const shown = useRef(new Map<string, number>());
  useEffect(() => {
    const changes = [];
    for (const [id, summary] of board.tasks) {
      if (shown.current.get(id) !== summary.revision) changes.push({ task: id, revision: summary.revision });
      shown.current.set(id, summary.revision);
    }
    markRendered("board", changes);
  }, [board]);

  return { board, connection, error, retry: () => setAttempt((n) => n + 1) };
}
