// The plan's layered (Sugiyama-style) layout: dagre assigns each subtask a layer after all its
// dependencies, orders nodes within layers to cut edge crossings, and routes the edges.
import dagre from "@dagrejs/dagre";

export interface Point {
  x: number;
  y: number;
}

export interface PlanNode {
  id: string;
  /** Top-left corner. */
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface PlanEdge {
  from: string;
  to: string;
  points: Point[];
}

export interface PlanLayout {
  nodes: Map<string, PlanNode>;
  edges: PlanEdge[];
  width: number;
  height: number;
}

export const NODE_SIZE = { width: 208, height: 76 };
/** Narrow screens lay the plan out top to bottom, with narrower nodes side by side. */
export const COMPACT_NODE_SIZE = { width: 150, height: 76 };

export function layoutPlan(
  subtasks: ReadonlyArray<{ id: string; depends_on: readonly string[] }>,
  direction: "LR" | "TB" = "LR",
  size = NODE_SIZE,
): PlanLayout {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: direction, nodesep: 20, ranksep: direction === "LR" ? 64 : 44, marginx: 12, marginy: 12 });
  graph.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(subtasks.map((s) => s.id));
  for (const subtask of subtasks) graph.setNode(subtask.id, { width: size.width, height: size.height });
  for (const subtask of subtasks) {
    for (const dependency of subtask.depends_on) if (ids.has(dependency)) graph.setEdge(dependency, subtask.id);
  }
  dagre.layout(graph);

  const nodes = new Map<string, PlanNode>();
  for (const id of graph.nodes()) {
    const node = graph.node(id);
    nodes.set(id, { id, x: node.x - node.width / 2, y: node.y - node.height / 2, width: node.width, height: node.height });
  }
  const edges = graph.edges().map((edge) => ({
    from: edge.v,
    to: edge.w,
    points: (graph.edge(edge).points ?? []).map((p: Point) => ({ x: p.x, y: p.y })),
  }));
  const label = graph.graph();
  return { nodes, edges, width: Math.ceil(label.width ?? 0), height: Math.ceil(label.height ?? 0) };
}

/** A smooth path through dagre's edge points. */
export function edgePath(points: readonly Point[]): string {
  if (points.length === 0) return "";
  const [first, ...rest] = points;
  let path = `M ${first.x} ${first.y}`;
  if (rest.length === 1) return `${path} L ${rest[0].x} ${rest[0].y}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const control = rest[i];
    const next = i === rest.length - 2 ? rest[i + 1] : { x: (rest[i].x + rest[i + 1].x) / 2, y: (rest[i].y + rest[i + 1].y) / 2 };
    path += ` Q ${control.x} ${control.y} ${next.x} ${next.y}`;
  }
  return path;
}
