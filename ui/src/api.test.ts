import { describe, expect, it } from "vitest";
import { traceUrl } from "./api";

describe("traceUrl", () => {
  it("joins the Jaeger URL and the trace id the way Jaeger's UI routes them", () => {
    expect(traceUrl("http://jaeger:16686", "4bf92f3577b34da6a3ce929d0e0e4736")).toBe("http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736");
    expect(traceUrl("http://localhost:16686/jaeger/", "ab")).toBe("http://localhost:16686/jaeger/trace/ab");
  });

  it("gives no link without a Jaeger URL or without a trace", () => {
    expect(traceUrl(null, "ab")).toBeNull();
    expect(traceUrl("", "ab")).toBeNull();
    expect(traceUrl("http://jaeger:16686", null)).toBeNull();
    expect(traceUrl("http://jaeger:16686", undefined)).toBeNull();
  });
});
