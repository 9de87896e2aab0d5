/**
 * Pure parts of issue 14: the Proxy-Cache TTL, the normalised request and its key, the
 * deterministic rule of cache.models, cached answers replayed as chunks, and the stream
 * writer's numbering, restarts and its settle() that fails the attempt on a lost delta.
 */
import { describe, expect, it } from "vitest";
import {
  cacheKey,
  canonicalJson,
  isDeterministic,
  normalisedRequest,
  parseCacheTtl,
} from "../../src/protocol/cache.js";
import { RequestError } from "../../src/protocol/codes.js";
import { chunkText, completionChunks } from "../../src/protocol/stream.js";
import type { Encoded } from "../../src/protocol/result.js";
import { Failure } from "../../src/worker/errors.js";
import { openStreamAttempt } from "../../src/worker/stream-log.js";

describe("parseCacheTtl", () => {
  it("reads ms, s, m, h, d and bare seconds", () => {
    expect(parseCacheTtl("1500ms")).toBe(1500);
    expect(parseCacheTtl("30s")).toBe(30_000);
    expect(parseCacheTtl("10m")).toBe(600_000);
    expect(parseCacheTtl("1h")).toBe(3_600_000);
    expect(parseCacheTtl("1d")).toBe(86_400_000);
    expect(parseCacheTtl("90")).toBe(90_000);
    expect(parseCacheTtl(" 2.5s ")).toBe(2500);
  });

  it("refuses anything else with a 400 naming the value", () => {
    for (const v of ["", "soon", "0", "-5s", "10 m", "1y", "1e3"]) {
      let err: unknown;
      try {
        parseCacheTtl(v);
      } catch (e) {
        err = e;
      }
      expect(err, v).toBeInstanceOf(RequestError);
      expect((err as RequestError).code).toBe(400);
      expect((err as RequestError).message).toContain(`"${v}"`);
    }
  });
});

describe("the normalised request", () => {
  const base = { model: "m", messages: [{ role: "user", content: "hi" }], temperature: 0 };

  it("sorts keys at every depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}',
    );
  });

  it("leaves out user, metadata, stream and stream_options, and nothing else", () => {
    const p = { ...base, user: "u", metadata: { a: "b" }, stream: true, stream_options: {} };
    expect(normalisedRequest(p)).toEqual(base);
    expect(cacheKey(p)).toBe(cacheKey(base));
    expect(cacheKey({ ...base, temperature: 0.5 })).not.toBe(cacheKey(base));
    expect(cacheKey({ ...base, model: "other" })).not.toBe(cacheKey(base));
    expect(cacheKey({ ...base, messages: [{ role: "user", content: "ho" }] })).not.toBe(
      cacheKey(base),
    );
    // Key order does not matter.
    expect(cacheKey({ temperature: 0, messages: base.messages, model: "m" })).toBe(cacheKey(base));
    expect(cacheKey(base)).toMatch(/^[0-9a-f]{64}$/);
  });

  it("is deterministic with temperature 0 or a seed", () => {
    expect(isDeterministic(base)).toBe(true);
    expect(isDeterministic({ ...base, temperature: 1, seed: 3 })).toBe(true);
    expect(isDeterministic({ model: "m", messages: [] })).toBe(false);
    expect(isDeterministic({ model: "m", messages: [], temperature: 0.2 })).toBe(false);
  });
});

describe("completionChunks", () => {
  it("replays a completion as one content delta and a closing chunk", () => {
    const chunks = completionChunks({
      id: "x",
      model: "m",
      choices: [
        { index: 0, message: { role: "assistant", content: "hello" }, finish_reason: "length" },
      ],
    } as never);
    expect(chunks.map(chunkText).join("")).toBe("hello");
    expect(chunks).toHaveLength(2);
    expect((chunks[1] as { choices: { finish_reason: string }[] }).choices[0]!.finish_reason).toBe(
      "length",
    );
  });
});

describe("the stream writer", () => {
  function harness(attempts: number, fail?: (n: number) => boolean) {
    const live: Encoded[] = [];
    const stored: { r: Encoded; key: string }[] = [];
    let n = 0;
    const a = openStreamAttempt(
      "req1",
      attempts,
      "_INBOX.x",
      (_s, r) => live.push(r),
      (_s, r, key) => {
        stored.push({ r, key });
        n++;
        return fail?.(n) ? Promise.reject(new Error("no PubAck")) : Promise.resolve();
      },
      { prefix: "openai.streams" },
    );
    return { a, live, stored };
  }
  const kinds = (l: Encoded[]) =>
    l.map((r) => `${r.headers.get("Openai-Stream")}${r.headers.get("Openai-Stream-Seq")}`);

  it("numbers deltas 1..n on both copies; a first attempt has no restart", async () => {
    const { a, live, stored } = harness(1);
    a.beginCall();
    for (let i = 0; i < 3; i++) a.delta({ choices: [{ delta: { content: `w${i}` } }] });
    await a.settle();
    expect(kinds(live)).toEqual(["delta1", "delta2", "delta3"]);
    expect(kinds(stored.map((s) => s.r))).toEqual(["delta1", "delta2", "delta3"]);
    expect(stored.map((s) => s.key)).toEqual(["req1.1.1", "req1.1.2", "req1.1.3"]);
    expect(stored.every((s) => s.r.headers.get("Nats-Msg-Id") === "")).toBe(true);
    expect(live.every((r) => r.headers.get("Nats-Msg-Id") === "req1")).toBe(true);
  });

  it("a redelivered attempt, and a retry after deltas went out, open with a restart and count again from 1", async () => {
    const { a, live } = harness(2);
    a.beginCall();
    a.delta({});
    a.delta({});
    a.beginCall(); // an in-process retry after two deltas
    a.delta({});
    await a.settle();
    expect(kinds(live)).toEqual(["restart", "delta1", "delta2", "restart", "delta1"]);
    expect(live.every((r) => r.headers.get("Proxy-Attempts") === "2")).toBe(true);
  });

  it("settle() fails the attempt as transient when a stored delta got no PubAck", async () => {
    const { a } = harness(1, (n) => n === 2);
    a.beginCall();
    for (let i = 0; i < 4; i++) a.delta({});
    const err = await a.settle().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Failure);
    expect((err as Failure).kind).toBe("transient");
    expect((err as Failure).message).toMatch(/could not store streamed delta 2 of req1/);
  });
});
