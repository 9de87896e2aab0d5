/**
 * Trace context parsing, and the promise that tracing off costs nothing: no static import
 * path from the CLI or the composition root reaches the OpenTelemetry SDK (only the
 * dynamic import in src/tracing/tracing.ts does, when an endpoint is configured).
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { headers } from "@nats-io/transport-node";
import {
  ensureTraceparent,
  formatTraceparent,
  newTraceparent,
  parseTraceparent,
  traceHeaders,
} from "../../src/protocol/traceparent.js";
import { tracesUrl } from "../../src/tracing/otel.js";

const SRC = fileURLToPath(new URL("../../src/", import.meta.url));

describe("traceparent", () => {
  it("parses valid headers and refuses invalid ones", () => {
    const v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    expect(parseTraceparent(v)).toEqual({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "00f067aa0ba902b7",
      flags: 1,
    });
    expect(formatTraceparent(parseTraceparent(v)!)).toBe(v);
    for (const bad of [
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ])
      expect(parseTraceparent(bad), bad).toBeUndefined();
    // A later version may carry more fields.
    expect(parseTraceparent(`01${v.slice(2)}-more`)?.traceId).toBe(
      "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    expect(parseTraceparent(newTraceparent())?.flags).toBe(1);
  });

  it("reads headers in any case and starts a trace only when there is no valid one", () => {
    const h = headers();
    h.set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    h.set("Tracestate", "a=1");
    expect(traceHeaders(h)?.tracestate).toBe("a=1");
    ensureTraceparent(h);
    expect(h.values("traceparent", "insensitive")).toHaveLength(1);
    const bad = headers();
    bad.set("traceparent", "garbage");
    bad.set("tracestate", "a=1");
    ensureTraceparent(bad);
    expect(parseTraceparent(bad.get("traceparent"))).toBeDefined();
    expect(bad.get("tracestate")).toBe("");
  });

  it("sends spans to <endpoint>/v1/traces", () => {
    expect(tracesUrl("http://collector:4318")).toBe("http://collector:4318/v1/traces");
    expect(tracesUrl("http://collector:4318/")).toBe("http://collector:4318/v1/traces");
    expect(tracesUrl("http://c:4318/v1/traces")).toBe("http://c:4318/v1/traces");
  });
});

/** Every module reachable from `file` through static (non-type) imports. */
function staticGraph(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
  if (seen.has(file)) return seen;
  const text = readFileSync(file, "utf8");
  const specs: string[] = [];
  // `import x from "y"`, `import { a } from "y"`, `export … from "y"`, `import "y"`; not `import type`.
  const re = /^(?:import|export)\s+(?!type\s)(?:[^'";]*?\sfrom\s+)?["']([^"']+)["']/gm;
  for (const m of text.matchAll(re)) specs.push(m[1]!);
  seen.set(file, specs);
  for (const s of specs)
    if (s.startsWith(".")) staticGraph(resolve(dirname(file), s.replace(/\.js$/, ".ts")), seen);
  return seen;
}

describe("tracing off", () => {
  it("loads no OpenTelemetry module: none is on a static import path", () => {
    for (const entry of ["cli/main.ts", "main.ts", "index.ts"]) {
      const graph = staticGraph(join(SRC, entry));
      expect(graph.size, entry).toBeGreaterThan(10);
      const otel = [...graph].filter(([, specs]) =>
        specs.some((s) => s.startsWith("@opentelemetry/")),
      );
      expect(
        otel.map(([f]) => f),
        entry,
      ).toEqual([]);
      expect(
        [...graph.keys()].some((f) => f.endsWith("tracing/otel.ts")),
        entry,
      ).toBe(false);
    }
    // The one way in is the dynamic import.
    expect(readFileSync(join(SRC, "tracing/tracing.ts"), "utf8")).toContain(
      'await import("./otel.js")',
    );
  });
});
