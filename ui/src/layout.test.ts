import { describe, expect, it } from "vitest";
import { edgePath, layoutPlan, NODE_SIZE } from "./layout";

const diamond = [
  { id: "schema", depends_on: [] },
  { id: "api", depends_on: ["schema"] },
  { id: "ui", depends_on: ["schema"] },
  { id: "tests", depends_on: ["api", "ui"] },
];

function overlaps(a: { x: number; y: number; width: number; height: number }, b: typeof a): boolean {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}

describe("layoutPlan", () => {
  it("puts every subtask in a layer after all of its dependencies (left to right)", () => {
    const { nodes } = layoutPlan(diamond, "LR");
    const x = (id: string) => nodes.get(id)!.x;
    expect(x("schema")).toBeLessThan(x("api"));
    expect(x("api")).toBe(x("ui"));
    expect(x("ui")).toBeLessThan(x("tests"));
  });

  it("stacks the layers top to bottom on narrow screens", () => {
    const { nodes } = layoutPlan(diamond, "TB");
    const y = (id: string) => nodes.get(id)!.y;
    expect(y("schema")).toBeLessThan(y("api"));
    expect(y("api")).toBe(y("ui"));
    expect(y("ui")).toBeLessThan(y("tests"));
  });

  it("never overlaps two nodes and fits them all inside its size", () => {
    const wide = Array.from({ length: 12 }, (_, n) => ({ id: `s${n}`, depends_on: n ? [`s${Math.floor((n - 1) / 3)}`] : [] }));
    const layout = layoutPlan(wide, "LR");
    const all = [...layout.nodes.values()];
    expect(all).toHaveLength(12);
    for (const [i, a] of all.entries()) {
      expect(a.width).toBe(NODE_SIZE.width);
      expect(a.x).toBeGreaterThanOrEqual(0);
      expect(a.y).toBeGreaterThanOrEqual(0);
      expect(a.x + a.width).toBeLessThanOrEqual(layout.width);
      expect(a.y + a.height).toBeLessThanOrEqual(layout.height);
      for (const b of all.slice(i + 1)) expect(overlaps(a, b)).toBe(false);
    }
  });

  it("draws one routed edge per dependency and ignores dependencies that are not in the plan", () => {
    const { edges } = layoutPlan([...diamond, { id: "docs", depends_on: ["ghost", "tests"] }]);
    expect(edges.map((e) => `${e.from}->${e.to}`).sort()).toEqual(
      ["api->tests", "schema->api", "schema->ui", "tests->docs", "ui->tests"].sort(),
    );
    for (const edge of edges) {
      expect(edge.points.length).toBeGreaterThanOrEqual(2);
      expect(edgePath(edge.points)).toMatch(/^M [\d.]+ [\d.]+ [LQ] /);
    }
  });
});
