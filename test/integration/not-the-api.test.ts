/**
 * Failures that are not the API's (issue 12, item 4) used to be classed transient, so
 * every delivery paid for another API call: a result over the server's max_payload, a
 * model name no header can carry, a result store that fails. Now the first two are
 * permanent answers (413, 400) after one call at most, and a store failure is retried
 * without calling the API again, then handed back, never turned into an error verdict.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import {
  eventually,
  makeStreamsDir,
  spawnCli,
  startTestProxy,
  testClient,
} from "../helpers/proxy.js";
import { startNatsServer } from "../helpers/nats-server.js";
import { DeadLetters } from "../../src/client/dlq.js";
import { sc, useRig } from "../helpers/rig.js";
import type { ProxyDeps } from "../../src/main.js";
import type { ProxyClient } from "../../src/client/client.js";
import type { Outputs } from "../../src/worker/outputs.js";

const ANSWER = "(dev-openai test double) You said: ";
const MAX_PAYLOAD = 64 * 1024;
const MAX_DELIVER = 3;
const rig = useRig({
  server: { maxPayload: MAX_PAYLOAD },
  streams: { ackWaitMs: 2000, maxDeliver: MAX_DELIVER, maxMsgSize: 32 * 1024 },
  applyStreams: true,
  flags: { "openai.retries": 0 },
  afterEach: (rig) => rig.dlq.purge(),
});

/** Submits with a fresh Reply-To; resolves with the first reply (bounded). */
async function ask(id: string, body: Parameters<ProxyClient["submit"]>[0]): Promise<Msg> {
  const inbox = createInbox();
  const sub = rig.nc.subscribe(inbox, { max: 1, timeout: 20_000 });
  await rig.client.submit(body, { id, replyTo: inbox });
  for await (const m of sub) return m;
  throw new Error(`no reply for ${id}`);
}

const code = (m: Msg) => m.headers?.get("Nats-Service-Error-Code") ?? "";
const error = (m: Msg) => m.headers?.get("Nats-Service-Error") ?? "";

async function settled(): Promise<void> {
  const jsm = await jetstreamManager(rig.nc);
  await eventually(
    async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
    15_000,
    "the queue to drain",
  );
}

/** Fails the first `n` stores of a success result for `id`, as a NATS outage would. */
function failingSuccessStores(id: string, n: number): { deps: ProxyDeps; attempts: () => number } {
  let attempts = 0;
  return {
    attempts: () => attempts,
    deps: {
      wrapOutputs: (o: Outputs): Outputs => ({
        ...o,
        storeResult: async (rid, r) => {
          if (rid === id && r.headers.get("Nats-Service-Error-Code") === "") {
            attempts++;
            if (attempts <= n) throw new Error(`injected: results store unavailable (${attempts})`);
          }
          await o.storeResult(rid, r);
        },
      }),
    },
  };
}

describe("a result over the server's max_payload", () => {
  it("is answered 413 after one API call, saying what to do", async () => {
    await rig.proxy();
    const reply = await ask("too-big", "write me a novel [[size:100000]]");
    expect(code(reply)).toBe("413");
    expect(error(reply)).toMatch(/max_payload \(65536 bytes\)/);
    expect(error(reply)).toMatch(/max_tokens/);
    await settled();
    expect(rig.dev.stats()).toMatchObject({ calls: 1, ok: 1 });
    expect((await rig.dlq.list()).map((d) => [d.id, d.code, d.attempts])).toEqual([
      ["too-big", 413, 1],
    ]);
    expect(await rig.client.result("too-big")).toMatchObject({ ok: false, code: 413 });
  });

  it("an answer that fits still goes through", async () => {
    await rig.proxy();
    const reply = await ask("fits", "a short story [[size:20000]]");
    expect(code(reply)).toBe("");
    expect(sc.decode(reply.data)).toHaveLength(20000);
  });
});

describe("a model name no header can carry", () => {
  it.each([
    ["a newline", "gpt-4o\nmini"],
    ["a carriage return", "gpt-4o\rmini"],
    ["a control character", "gpt-4o\u0000"],
    ["a space", "gpt 4o"],
    ["257 characters", "m".repeat(257)],
  ])("with %s is refused with 400 naming the field, without calling the API", async (_, model) => {
    await rig.proxy();
    const id = `model-${Math.random().toString(36).slice(2)}`;
    const body = { model, messages: [{ role: "user", content: "hi" }] };
    // The client library refuses it before sending…
    await expect(rig.client.submit(body, { id })).rejects.toThrow(/"model"/);
    // …and the worker, when it is published directly.
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1, timeout: 20_000 });
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", inbox);
    await jetstream(rig.nc).publish(
      `openai.requests.${id}`,
      new TextEncoder().encode(JSON.stringify(body)),
      {
        msgID: id,
        headers: h,
      },
    );
    let reply: Msg | undefined;
    for await (const m of sub) reply = m;
    expect(code(reply!)).toBe("400");
    expect(error(reply!)).toMatch(/"model"/);
    await settled();
    expect(rig.dev.stats().calls).toBe(0);
    expect((await rig.dlq.list()).map((d) => [d.id, d.code, d.attempts])).toEqual([[id, 400, 1]]);
  });
});

describe("a result store that fails", () => {
  it("on the last delivery is retried in-process: the answer is stored, not an error", async () => {
    // Deliveries 1 and 2 fail upstream; delivery 3 (the last) is answered, and its first
    // store fails.
    const f = failingSuccessStores("last-store", 1);
    await rig.proxy({}, f.deps);
    const reply = await ask("last-store", "answered at last [[status:503x2]]");
    expect(code(reply)).toBe("");
    expect(sc.decode(reply.data)).toBe(`${ANSWER}answered at last [[status:503x2]]`);
    expect(reply.headers?.get("Proxy-Attempts")).toBe(String(MAX_DELIVER));
    expect(f.attempts()).toBe(2);
    expect(rig.dev.stats()).toMatchObject({ calls: 3, ok: 1 }); // no call for the failed store
    await settled();
    expect(await rig.dlq.list()).toEqual([]);
    expect(await rig.client.result("last-store")).toMatchObject({ ok: true });
  });

  it("that keeps failing hands the message back (re-queued on the last delivery), never an error verdict", async () => {
    // Fails every in-process attempt of deliveries 1 and 2: both are handed back.
    const f = failingSuccessStores("keeps-failing", 10);
    await rig.proxy({}, f.deps);
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox);
    await rig.client.submit("store me", { id: "keeps-failing", replyTo: inbox });
    const r = await rig.client.result("keeps-failing", { wait: true, timeoutMs: 30_000 });
    expect(r).toMatchObject({ ok: true, body: `${ANSWER}store me` });
    expect(f.attempts()).toBe(11);
    // 5 store attempts per delivery: deliveries 1 and 2 fail all theirs (2 is re-queued),
    // the fresh copy's first attempt succeeds. One API call per delivery, none per retry.
    expect(rig.dev.stats().calls).toBe(3);
    await settled();
    expect(await rig.dlq.list()).toEqual([]);
    await rig.nc.flush();
    expect(sub.getReceived()).toBe(1); // the one success, no error reply
    sub.unsubscribe();
  });
});

describe("a dead letter that cannot fit in one message", () => {
  it("keeps everything but the body (Proxy-Body-Omitted), so the request settles; replay says why it cannot", async () => {
    // The queue accepts a request as large as max_payload: its dead letter (the body plus
    // the failure headers) then exceeds it.
    const server = await startNatsServer({ maxPayload: MAX_PAYLOAD });
    const streams = makeStreamsDir({
      ackWaitMs: 2000,
      maxDeliver: MAX_DELIVER,
      maxMsgSize: MAX_PAYLOAD,
    });
    const { client, nc } = await testClient(server.url);
    const proxy = await startTestProxy({
      natsUrl: server.url,
      openaiUrl: rig.dev.url,
      streamsDir: streams.dir,
      flags: { "openai.retries": 0 },
    });
    try {
      const body = sc.encode(`{${"x".repeat(MAX_PAYLOAD - 300)}`); // not JSON: a 400
      const inbox = createInbox();
      const sub = nc.subscribe(inbox, { max: 1, timeout: 20_000 });
      await client.submitRaw(body, "application/json", { id: "huge-bad", replyTo: inbox });
      let reply: Msg | undefined;
      for await (const m of sub) reply = m;
      expect(code(reply!)).toBe("400");
      const jsm = await jetstreamManager(nc);
      await eventually(
        async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
        15_000,
        "the queue to drain",
      );
      const dlq = new DeadLetters(nc, jsm, {
        dlqStream: "OPENAI_DLQ",
        dlqPrefix: "openai.dlq",
        requestsPrefix: "openai.requests",
      });
      const d = await dlq.show("huge-bad");
      expect(d?.code).toBe(400);
      expect(d?.data.length).toBe(0);
      expect(d?.headers.get("Proxy-Body-Omitted")).toBe(String(body.length));
      expect(await client.result("huge-bad")).toMatchObject({ ok: false, code: 400 });
      await expect(dlq.replay(d!)).rejects.toThrow(/has no body.*resubmit/);
      expect(await dlq.show("huge-bad")).not.toBeNull(); // kept, not replayed empty
      const all = spawnCli(["dlq", "replay", "--all"], { NATS_URL: server.url });
      expect(await all.exited).toBe(1);
      expect(all.stderr()).toMatch(/dead letter huge-bad has no body/);
      expect(all.stderr()).toMatch(/replayed 0 dead letter\(s\), 1 cannot be replayed/);
      expect(await dlq.show("huge-bad")).not.toBeNull();
    } finally {
      await proxy.stop(500);
      await nc.close();
      await server.stop();
      streams.cleanup();
    }
  });
});
