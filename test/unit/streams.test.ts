import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  diff,
  formatReport,
  loadDefinitions,
  StreamsError,
  type Definitions,
} from "../../src/nats/streams.js";

const STREAMS_DIR = fileURLToPath(new URL("../../streams", import.meta.url));
const S = 1_000_000_000; // ns per second

function stream(defs: Definitions, name: string) {
  const s = defs.streams.find((x) => x.name === name);
  if (!s) throw new Error(`stream ${name} not defined`);
  return s;
}

describe("loadDefinitions on the repository's streams/", () => {
  const defs = loadDefinitions(STREAMS_DIR);

  it("defines the six streams and two consumers", () => {
    expect(defs.streams.map((s) => s.name).sort()).toEqual([
      "OPENAI_BATCHES",
      "OPENAI_DLQ",
      "OPENAI_POISON",
      "OPENAI_REQUESTS",
      "OPENAI_RESULTS",
      "OPENAI_STREAMS",
    ]);
    expect(defs.consumers.map((c) => c.config.durable_name).sort()).toEqual([
      "openai-proxy",
      "openai-proxy-poison",
    ]);
  });

  it("OPENAI_REQUESTS is a file-backed work queue that refuses when full", () => {
    const s = stream(defs, "OPENAI_REQUESTS");
    expect(s.retention).toBe("workqueue");
    expect(s.storage).toBe("file");
    expect(s.discard).toBe("new");
    expect(s.subjects).toEqual(["openai.requests.>"]);
    expect(s.duplicate_window).toBeGreaterThanOrEqual(120 * S);
    expect(s.max_msg_size).toBe(1024 * 1024);
  });

  it("OPENAI_RESULTS keeps one message per id for 24 h with direct get", () => {
    const s = stream(defs, "OPENAI_RESULTS");
    expect(s.retention).toBe("limits");
    expect(s.subjects).toEqual(["openai.results.>"]);
    expect(s.max_msgs_per_subject).toBe(1);
    expect(s.allow_direct).toBe(true);
    expect(s.max_age).toBe(24 * 3600 * S);
  });

  it("OPENAI_DLQ keeps dead letters for 14 days", () => {
    const s = stream(defs, "OPENAI_DLQ");
    expect(s.retention).toBe("limits");
    expect(s.subjects).toEqual(["openai.dlq.>"]);
    expect(s.max_age).toBe(14 * 24 * 3600 * S);
  });

  it("OPENAI_STREAMS keeps every streamed delta of a request for 15 minutes, on file", () => {
    const s = stream(defs, "OPENAI_STREAMS");
    expect(s.retention).toBe("limits");
    expect(s.storage).toBe("file");
    expect(s.subjects).toEqual(["openai.streams.>"]);
    expect(s.max_age).toBe(15 * 60 * S);
    expect(s.max_msgs_per_subject).toBeUndefined();
  });

  it("the openai-proxy consumer: explicit ack, 30 s ack_wait, max_deliver 5, no backoff", () => {
    const c = defs.consumers.find((x) => x.config.durable_name === "openai-proxy")!;
    expect(c.stream_name).toBe("OPENAI_REQUESTS");
    expect(c.config.durable_name).toBe("openai-proxy");
    expect(c.config.ack_policy).toBe("explicit");
    expect(c.config.ack_wait).toBe(30 * S);
    expect(c.config.max_deliver).toBe(5);
    expect(c.config.backoff).toBeUndefined();
    expect(c.config.max_ack_pending).toBeGreaterThan(0);
  });

  it("replicas overrides num_replicas of every stream", () => {
    const d3 = loadDefinitions(STREAMS_DIR, 3);
    expect(d3.streams.map((s) => s.num_replicas)).toEqual([3, 3, 3, 3, 3, 3]);
    expect(defs.streams.map((s) => s.num_replicas)).toEqual([1, 1, 1, 1, 1, 1]);
  });
});

describe("loadDefinitions errors", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "proxy-streams-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("names the file with invalid JSON", () => {
    writeFileSync(join(dir, "A.json"), JSON.stringify({ name: "A" }));
    writeFileSync(join(dir, "broken.json"), '{"name": "B",');
    expect(() => loadDefinitions(dir)).toThrow(StreamsError);
    expect(() => loadDefinitions(dir)).toThrow(join(dir, "broken.json"));
    expect(() => loadDefinitions(dir)).toThrow(/invalid JSON/);
  });

  it("names a file that is neither a stream nor a consumer", () => {
    writeFileSync(join(dir, "odd.json"), JSON.stringify({ foo: 1 }));
    expect(() => loadDefinitions(dir)).toThrow(/odd\.json: neither a stream/);
  });

  it("requires a consumer's durable_name", () => {
    writeFileSync(join(dir, "c.json"), JSON.stringify({ stream_name: "S", config: {} }));
    expect(() => loadDefinitions(dir)).toThrow(/durable_name is required/);
  });

  it("refuses a missing directory", () => {
    expect(() => loadDefinitions(join(dir, "nope"))).toThrow(StreamsError);
  });

  it("reads only *.json files", () => {
    writeFileSync(join(dir, "README.md"), "not json");
    writeFileSync(join(dir, "S.json"), JSON.stringify({ name: "S" }));
    expect(loadDefinitions(dir).streams.map((s) => s.name)).toEqual(["S"]);
  });
});

describe("diff", () => {
  it("ignores keys absent from the wanted config and the name", () => {
    const want = { name: "S", max_age: 10, subjects: ["a.>"] };
    const have = { name: "OTHER", max_age: 10, subjects: ["a.>"], first_seq: 1, sealed: false };
    expect(diff(want, have)).toEqual([]);
  });

  it("reports changed keys with old and new values", () => {
    const changes = diff(
      { name: "S", max_age: 20, retention: "workqueue", subjects: ["a.>"] },
      { name: "S", max_age: 10, retention: "limits", subjects: ["a.>"] },
    );
    expect(changes).toEqual(["max_age: 10 → 20", 'retention: "limits" → "workqueue"']);
  });

  it("reports a wanted key the server lacks", () => {
    expect(diff({ allow_direct: true }, {})).toEqual(["allow_direct: undefined → true"]);
  });

  it("treats empty string, null and missing as equal", () => {
    expect(diff({ description: "" }, {})).toEqual([]);
    expect(diff({ description: null }, { description: "" })).toEqual([]);
  });

  it("compares arrays and objects by value", () => {
    expect(diff({ subjects: ["a.>", "b.>"] }, { subjects: ["a.>", "b.>"] })).toEqual([]);
    expect(diff({ subjects: ["a.>"] }, { subjects: ["a.>", "b.>"] })).toHaveLength(1);
  });
});

describe("formatReport", () => {
  it("lists changes only for actions that changed something", () => {
    expect(
      formatReport({ kind: "stream", name: "S", action: "updated", changes: ["a: 1 → 2"] }),
    ).toBe("stream S: updated (a: 1 → 2)");
    expect(
      formatReport({ kind: "consumer", name: "S/c", action: "unchanged", changes: ["x"] }),
    ).toBe("consumer S/c: unchanged");
  });
});
