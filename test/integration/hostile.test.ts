/**
 * Hostile and broken input: each gets a clear error naming what to fix, the worker
 * keeps serving, the metrics count it, and nothing accepted is lost. Backpressure: a
 * full queue refuses with 503 and every accepted request still completes.
 */
import { jetstreamManager, jetstream, type StoredMsg } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { sc, useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";
import { ClientError } from "../../src/client/client.js";

const rig = useRig({
  streams: { ackWaitMs: 5000, maxMsgs: 50, maxMsgSize: 64 * 1024 },
  applyStreams: true,
  resetDev: false,
});
let proxy: Proxy;
let base: string;

beforeAll(async () => {
  proxy = await rig.startProxy({ flags: { "http.enabled": true, "http.port": 0 } });
  base = `http://127.0.0.1:${proxy.http!.port}`;
});

// Runs before the rig's afterAll (after hooks run in reverse order).
afterAll(() => proxy?.stop(500));

/** Sends through the compat shim, like the original tool's clients. */
async function viaShim(body: Uint8Array, contentType?: string): Promise<Msg> {
  const h = headers();
  if (contentType) h.set("Content-Type", contentType);
  return rig.nc.request("openai_requests", body, { timeout: 10_000, headers: h });
}

const code = (m: Msg) => m.headers?.get("Nats-Service-Error-Code");
const error = (m: Msg) => m.headers?.get("Nats-Service-Error") ?? "";

async function stillServing() {
  const r = await rig.client.request("are you still there?", { timeoutMs: 10_000 });
  expect(r.body).toBe("(dev-openai test double) You said: are you still there?");
}

describe("hostile input", () => {
  it.each([
    ["an empty body", new Uint8Array(0), undefined, /empty request body/],
    ["only whitespace", sc.encode("  \n\t "), undefined, /only whitespace/],
    [
      "binary / invalid UTF-8",
      new Uint8Array([0xff, 0xfe, 0x00, 0xc3, 0x28]),
      undefined,
      /not valid UTF-8/,
    ],
    ["malformed JSON", sc.encode('{"messages": [}'), "application/json", /unparseable JSON/],
    [
      "JSON without messages",
      sc.encode('{"model":"gpt-4o-mini"}'),
      "application/json",
      /no messages/,
    ],
    [
      "messages of the wrong type",
      sc.encode('{"messages":"hello"}'),
      "application/json",
      /"messages" must be a non-empty array/,
    ],
    [
      "a message without a role",
      sc.encode('{"messages":[{"content":"x"}]}'),
      "application/json",
      /messages\[0\] must be an object with a string "role"/,
    ],
    [
      "a wrong field type",
      sc.encode('{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}'),
      "application/json",
      /"temperature" must be a number/,
    ],
    ["a JSON array", sc.encode("[1,2,3]"), "application/json", /must be an object with "messages"/],
  ])(
    "answers %s with a 400 naming what to fix, without calling the API",
    async (_what, body, ct, re) => {
      const calls = rig.dev.stats().calls;
      const r = await viaShim(body, ct);
      expect(code(r)).toBe("400");
      expect(error(r)).toMatch(re);
      expect(rig.dev.stats().calls).toBe(calls);
    },
  );

  it("answers an unknown model with a 404 naming the model", async () => {
    const r = await viaShim(
      sc.encode('{"model":"gpt-99","messages":[{"role":"user","content":"x"}]}'),
      "application/json",
    );
    expect(code(r)).toBe("404");
    expect(error(r)).toMatch(/model "gpt-99" not found/);
    await stillServing();
  });

  it("refuses a body over the stream's max message size with 413, from the client and from the shim", async () => {
    const big = "x".repeat(100 * 1024);
    const err = await rig.client.submit(big).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe(413);
    expect((err as ClientError).message).toMatch(/too large/);
    const r = await viaShim(sc.encode(big));
    expect(code(r)).toBe("413");
    // Over the server's max_payload (1 MiB) the client refuses before sending.
    const huge = await rig.client.submit("y".repeat(1024 * 1024 + 10)).catch((e: unknown) => e);
    expect((huge as ClientError).code).toBe(413);
    await stillServing();
  });

  it("refuses ids NATS cannot carry as one subject token, and ignores a bad Nats-Msg-Id in the shim", async () => {
    for (const id of ["a.b", "has space", "star*", "gt>", ""]) {
      const e = await rig.client.submit("x", { id }).catch((x: unknown) => x);
      expect((e as ClientError).code).toBe(400);
      expect((e as ClientError).message).toMatch(/request id/);
    }
    const h = headers();
    h.set("Nats-Msg-Id", "not.a.valid.id");
    const r = await rig.nc.request("openai_requests", sc.encode("bad id header"), {
      timeout: 10_000,
      headers: h,
    });
    expect(sc.decode(r.data)).toBe("(dev-openai test double) You said: bad id header");
    expect(r.headers?.get("Nats-Msg-Id")).toMatch(/^[A-Za-z0-9]+$/);
  });

  it("dead-letters a request published on a subject whose id token has forbidden characters", async () => {
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    const h = headers();
    h.set("Reply-To", inbox);
    await jetstream(rig.nc).publish("openai.requests.caf\u00e9", sc.encode("x"), { headers: h });
    for await (const m of sub) {
      expect(code(m)).toBe("400");
      expect(error(m)).toMatch(/request id "caf.?" may only contain/);
    }
  });

  it.each([
    ["a stored result", "openai.results.someone-else"],
    ["a dead letter", "openai.dlq.forged"],
    ["a queued request", "openai.requests.forged"],
    ["the JetStream API", "$JS.API.STREAM.PURGE.OPENAI_REQUESTS"],
    ["a wildcard", "apps.*"],
  ])("refuses a Reply-To into %s, and never publishes there", async (_what, replyTo) => {
    const watched = rig.nc.subscribe(replyTo.replace("*", "x"));
    const resultBefore = await rig.client.result("someone-else");
    const id = `rt-${Math.random().toString(36).slice(2)}`;
    const h = headers();
    h.set("Reply-To", replyTo);
    h.set("Content-Type", "application/json");
    const body = { stream: true, messages: [{ role: "user", content: "reply elsewhere" }] };
    await jetstream(rig.nc).publish(`openai.requests.${id}`, sc.encode(JSON.stringify(body)), {
      msgID: id,
      headers: h,
    });
    const r = await rig.client.result(id, { wait: true, timeoutMs: 10_000 });
    expect(r).toMatchObject({ ok: false, code: 400 });
    expect(r?.error).toMatch(/Reply-To/);
    await rig.nc.flush();
    expect(watched.getProcessed()).toBe(0);
    watched.unsubscribe();
    expect((await rig.client.result("someone-else"))?.body).toBe(resultBefore?.body);
  });

  it("does not answer a refused subject's error into a refused Reply-To", async () => {
    await rig.client.submit("keep me", { id: "keep-me" });
    await rig.client.result("keep-me", { wait: true, timeoutMs: 10_000 });
    const jsm = await jetstreamManager(rig.nc);
    const before = (await jsm.streams.info("OPENAI_RESULTS")).state.messages;
    const h = headers();
    h.set("Content-Type", "application/json");
    // The error body of a refused request would be a valid purge request.
    h.set("Reply-To", "$JS.API.STREAM.PURGE.OPENAI_RESULTS");
    // A subject with an unknown tenant and priority: no lane serves it, so the stream
    // does not even accept it (nothing is stored that no consumer would settle).
    await expect(
      jetstream(rig.nc).publish("openai.requests.two.tokens.x", sc.encode("{}"), { headers: h }),
    ).rejects.toThrow(/no responders|jetstream is not enabled/);
    // A lane subject whose id token is refused: answered with 400, never into the Reply-To.
    await jetstream(rig.nc).publish("openai.requests.default.high.bad%id", sc.encode("{}"), {
      headers: h,
    });
    let stored: StoredMsg | null = null;
    await eventually(
      async () => {
        stored = await jsm.streams.getMessage("OPENAI_RESULTS", {
          last_by_subj: "openai.results.bad%id",
        });
        return stored !== null;
      },
      10_000,
      "the error result",
    );
    expect(stored!.header.get("Nats-Service-Error-Code")).toBe("400");
    expect((await jsm.streams.info("OPENAI_RESULTS")).state.messages).toBe(before + 1);
    expect((await rig.client.result("keep-me"))?.ok).toBe(true);
  });

  it("the shim never answers into the proxy's own subjects", async () => {
    await rig.client.submit("original", { id: "dup-shim" });
    const original = await rig.client.result("dup-shim", { wait: true, timeoutMs: 10_000 });
    const h = headers();
    h.set("Nats-Msg-Id", "dup-shim"); // a duplicate: the shim refuses it with 409…
    rig.nc.publish("openai_requests", sc.encode("again"), {
      headers: h,
      reply: "openai.results.dup-shim",
    });
    await rig.nc.flush();
    await stillServing(); // …and the shim has handled it by now
    expect((await rig.client.result("dup-shim"))?.body).toBe(original?.body);
  });

  it("never hands a stored result to a different request that reuses the id", async () => {
    // Bob's request completes.
    await rig.client.submit("bob's secret question", { id: "shared-id" });
    const bob = await rig.client.result("shared-id", { wait: true, timeoutMs: 10_000 });
    expect(bob?.body).toBe("(dev-openai test double) You said: bob's secret question");
    // Alice publishes under the same id (another Nats-Msg-Id, so dedupe does not stop it)
    // and forces a redelivery with a transient failure.
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    const h = headers();
    h.set("Reply-To", inbox);
    await jetstream(rig.nc).publish(
      "openai.requests.shared-id",
      sc.encode("alice asks [[status:500x4]]"),
      {
        msgID: "alice-1",
        headers: h,
      },
    );
    for await (const m of sub) {
      expect(sc.decode(m.data)).not.toContain("bob's secret question");
      expect(sc.decode(m.data)).toBe(
        "(dev-openai test double) You said: alice asks [[status:500x4]]",
      );
    }
  });

  it("counts the refused input in the metrics", async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const n = (re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
    expect(n(/openai_proxy_dead_letters_total\{code="400"\} (\d+)/)).toBeGreaterThanOrEqual(10);
    expect(n(/openai_proxy_dead_letters_total\{code="404"\} (\d+)/)).toBeGreaterThanOrEqual(1);
    expect(n(/openai_proxy_shim_requests_total\{result="413"\} (\d+)/)).toBe(1);
  });
});

describe("backpressure", () => {
  it("refuses new requests with 503 'queue full' when the queue is full, and completes every accepted one", async () => {
    await proxy.stop(500); // nobody consumes: the queue (max_msgs 50) fills up
    const accepted: string[] = [];
    let refused = 0;
    let refusal: ClientError | undefined;
    for (let i = 0; i < 80; i++) {
      try {
        accepted.push((await rig.client.submit(`flood ${i}`, { id: `flood-${i}` })).id);
      } catch (e) {
        refused++;
        refusal = e as ClientError;
      }
    }
    expect(accepted).toHaveLength(50);
    expect(refused).toBe(30);
    expect(refusal?.code).toBe(503);
    expect(refusal?.message).toMatch(
      /queue full: OPENAI_REQUESTS refused the request \(maximum messages exceeded\)/,
    );
    // The compat shim says the same to its caller, at once. It needs a running shim, so
    // start a proxy whose worker cannot keep up: the upstream hangs until released. A
    // delivered message stays in a work-queue stream until acked: the queue stays full.
    rig.dev.setLatency(60_000);
    proxy = await rig.startProxy({
      flags: { "worker.concurrency": 1, "openai.timeout_ms": 120_000 },
    });
    await eventually(() => rig.dev.stats().inFlight === 1, 10_000, "the worker to be busy");
    const r = await viaShim(sc.encode("no room"));
    expect(code(r)).toBe("503");
    expect(error(r)).toMatch(/queue full/);
    // Drain: every accepted request completes.
    rig.dev.setLatency(0);
    await proxy.stop(0);
    proxy = await rig.startProxy({
      flags: { "worker.concurrency": 16 },
    });
    const results = await Promise.all(
      accepted.map((id) => rig.client.result(id, { wait: true, timeoutMs: 30_000 })),
    );
    expect(results.every((x) => x?.ok)).toBe(true);
  });
});
