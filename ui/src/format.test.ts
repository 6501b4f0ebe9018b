import { describe, expect, it } from "vitest";
import { duration, firstLine, seconds, tokens } from "./format";

describe("format", () => {
  it("reads durations the way people say them", () => {
    expect(duration(null)).toBe("–");
    expect(duration(0.42)).toBe("0.4 s");
    expect(duration(42.4)).toBe("42 s");
    expect(duration(125)).toBe("2 min 05 s");
    expect(duration(3 * 3600 + 7 * 60)).toBe("3 h 07 min");
  });

  it("shortens token counts", () => {
    expect([tokens(950), tokens(1234), tokens(56_789), tokens(2_500_000)]).toEqual(["950", "1.2k", "57k", "2.5M"]);
  });

  it("measures from a start to an end or to now, never negative", () => {
    expect(seconds("2026-01-01T00:00:00Z", "2026-01-01T00:00:02.5Z")).toBe(2.5);
    expect(seconds("2026-01-01T00:00:10Z", null, Date.parse("2026-01-01T00:00:04Z"))).toBe(0);
    expect(seconds(null)).toBeNull();
  });

  it("titles a task by its first real line, skipping scripted plans", () => {
    expect(firstLine("\n  Build it  \nSIM-PLAN: {}")).toBe("Build it");
    expect(firstLine("SIM-PLAN: {}\nBuild it")).toBe("Build it");
  });
});
