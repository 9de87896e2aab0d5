/**
 * Failure semantics against a real nats-server and the local OpenAI-compatible server
 * with injected faults: retries honouring Retry-After, dead letters exactly once,
 * permanent errors without retries, expiry, auth pauses, DLQ replay, NATS restarts.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createInbox,
  headers,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";
import { startNatsServer, type NatsServerHandle } from "../helpers/nats-server.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import { eventually, makeStreamsDir, startTestProxy, testClient } from "../helpers/proxy.js";
import type { Proxy } from "../../src/main.js";
import type { ProxyClient } from "../../src/client/client.js";
import { DeadLetters } from "../../src/client/dlq.js";

const sc = {
  encode: (s: string) => new TextEncoder().encode(s),
  decode: (d: Uint8Array) => new TextDecoder().decode(d),
};
let server: NatsServerHandle;
let dev: DevOpenAI;
let nc: NatsConnection;
let client: ProxyClient;
let dlq: DeadLetters;
const streams = makeStreamsDir({ ackWaitMs: 2000, maxDeliver: 3 });
const proxies: Proxy[] = [];

beforeAll(async () => {
  [server, dev] = await Promise.all([startNatsServer(), startDevOpenAI()]);
  ({ client, nc } = await testClient(server.url));
});

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.stop(500)));
  dev.reset();
  dev.setLatency(0);
  dev.setApiKey(undefined);
  const jsm = await jetstreamManager(nc);
  for (const s of ["OPENAI_RESULTS", "OPENAI_DLQ", "OPENAI_REQUESTS"])
    await jsm.streams.purge(s).catch(() => undefined);
});

afterAll(async () => {
  await nc.close();
  await Promise.all([server.stop(), dev.close()]);
  streams.cleanup();
});

async function proxy(flags: Record<string, unknown> = {}) {
  const p = await startTestProxy({
    natsUrl: server.url,
    openaiUrl: dev.url,
    streamsDir: streams.dir,
    flags,
  });
  proxies.push(p);
  if (!dlq)
    dlq = new DeadLetters(nc, await jetstreamManager(nc), {
      dlqStream: "OPENAI_DLQ",
      dlqPrefix: "openai.dlq",
      requestsPrefix: "openai.requests",
    });
  return p;
}

/** Collects everything published to a fresh inbox. */
function collector(): { inbox: string; got: Msg[]; sub: Subscription; next: () => Promise<Msg> } {
  const inbox = createInbox();
  const got: Msg[] = [];
  const waiters: ((m: Msg) => void)[] = [];
  const sub = nc.subscribe(inbox, {
    callback: (_e, m) => {
      got.push(m);
      waiters.shift()?.(m);
    },
  });
  let taken = 0;
  return {
    inbox,
    got,
    sub,
    next: () =>
      taken < got.length
        ? Promise.resolve(got[taken++]!)
        : new Promise<Msg>((r) => waiters.push((m) => (taken++, r(m)))),
  };
}

async function settled(): Promise<void> {
  const jsm = await jetstreamManager(nc);
  let state = "";
  await eventually(
    async () => {
      const q = await jsm.streams.info("OPENAI_REQUESTS");
      const c = await jsm.consumers.info("OPENAI_REQUESTS", "openai-proxy-default-normal");
      state = JSON.stringify({
        q: q.state,
        pending: c.num_pending,
        ackPending: c.num_ack_pending,
        redelivered: c.num_redelivered,
        waiting: c.num_waiting,
        delivered: c.delivered,
        ackFloor: c.ack_floor,
      });
      return q.state.messages === 0 && c.num_ack_pending === 0 && c.num_pending === 0;
    },
    20_000,
    "the queue to drain",
  ).catch((e: Error) => {
    throw new Error(`${e.message}: ${state}`);
  });
}

async function dlqCount(): Promise<number> {
  const jsm = await jetstreamManager(nc);
  return (await jsm.streams.info("OPENAI_DLQ")).state.messages;
}

describe("transient failures", () => {
  it("waits at least the Retry-After of a 429, then succeeds", async () => {
    await proxy();
    const c = collector();
    await client.submit("rate limited [[status:429x1,retry:1]]", { id: "r429", replyTo: c.inbox });
    const reply = await c.next();
    expect(sc.decode(reply.data)).toContain("You said: rate limited");
    const times = dev.stats().callTimes;
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(1000);
    expect(await dlqCount()).toBe(0);
  });

  it("recovers from a burst of 500s without a dead letter", async () => {
    await proxy();
    const c = collector();
    await client.submit("burst [[status:500x3]]", { id: "burst", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error")).toBe("");
    expect(sc.decode(reply.data)).toContain("You said: burst");
    expect(dev.stats().calls).toBe(4);
    await settled();
    expect(await dlqCount()).toBe(0);
  });

  it("dead-letters 500s past max_deliver exactly once, with one error reply", async () => {
    await proxy({ "openai.retries": 1 });
    const c = collector();
    await client.submit("always failing [[status:500]]", { id: "dead500", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("500");
    expect(reply.headers?.get("Proxy-Attempts")).toBe("3");
    await settled();
    // Nothing is left that could produce another reply or dead letter.
    expect(c.got).toHaveLength(1);
    expect(dev.stats().calls).toBe(6); // 3 deliveries × (1 call + 1 retry)
    const list = await dlq.list();
    expect(list.map((d) => [d.id, d.code, d.attempts])).toEqual([["dead500", 500, 3]]);
    expect(list[0]!.error).toMatch(/upstream 500/);
    const r = await client.result("dead500");
    expect(r).toMatchObject({ ok: false, code: 500 });
  });
});

describe("permanent failures", () => {
  it("answers an unknown model with 404, one dead letter, no retries", async () => {
    await proxy();
    const c = collector();
    await client.submit(
      { model: "gpt-nonexistent", messages: [{ role: "user", content: "hi" }] },
      { id: "m404", replyTo: c.inbox },
    );
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("404");
    expect(reply.headers?.get("Nats-Service-Error")).toContain('model "gpt-nonexistent" not found');
    expect(JSON.parse(sc.decode(reply.data))).toMatchObject({ error: { code: 404 } });
    await settled();
    expect(dev.stats().calls).toBe(1);
    expect(c.got).toHaveLength(1);
    expect((await dlq.list()).map((d) => d.code)).toEqual([404]);
  });

  it("answers an upstream 400 once, with one dead letter and no retries", async () => {
    await proxy();
    const c = collector();
    await client.submit("bad for the API [[status:400]]", { id: "u400", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    await settled();
    expect(dev.stats().calls).toBe(1);
    expect((await dlq.list()).map((d) => [d.id, d.code])).toEqual([["u400", 400]]);
  });

  it("rejects malformed JSON without calling the API, keeping the original body in the dead letter", async () => {
    await proxy();
    const c = collector();
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", c.inbox);
    await jetstream(nc).publish("openai.requests.badjson", sc.encode('{"messages": [ oops'), {
      msgID: "badjson",
      headers: h,
    });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(/unparseable JSON/);
    await settled();
    expect(dev.stats().calls).toBe(0);
    const d = await dlq.show("badjson");
    expect(sc.decode(d!.data)).toBe('{"messages": [ oops');
    expect(d!.headers.get("Reply-To")).toBe(c.inbox);
    expect(d!.headers.get("Proxy-Failed-At")).not.toBe("");
  });

  it("never calls the API for an expired request (408)", async () => {
    await proxy();
    const c = collector();
    await client.submit("too late", { id: "exp", replyTo: c.inbox, expiresAt: Date.now() - 1000 });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("408");
    await settled();
    expect(dev.stats().calls).toBe(0);
    expect((await dlq.list()).map((d) => d.code)).toEqual([408]);
  });
});

describe("outages", () => {
  it("pauses on 401 without dead-lettering, and completes everything once the key is accepted", async () => {
    dev.setApiKey("a-key-the-proxy-does-not-have");
    const p = await proxy({ "worker.breaker.probe_interval_ms": 100 });
    const ids = Array.from({ length: 10 }, (_, i) => `auth-${i}`);
    await Promise.all(ids.map((id) => client.submit(`needs auth ${id}`, { id })));
    await eventually(() => p.worker.breakerState === "open", 10_000, "the breaker to open");
    // While paused the proxy probes the API (GET /models) instead of pulling requests.
    const probes = dev.stats().modelCalls;
    await eventually(() => dev.stats().modelCalls >= probes + 2, 5_000, "two probes");
    const calls = dev.stats().calls;
    await eventually(() => dev.stats().modelCalls >= probes + 3, 5_000, "a third probe");
    expect(dev.stats().calls).toBe(calls); // no request was pulled while paused
    expect(await dlqCount()).toBe(0);
    dev.setApiKey(undefined);
    const results = await Promise.all(
      ids.map((id) => client.result(id, { wait: true, timeoutMs: 20_000 })),
    );
    expect(results.every((r) => r?.ok)).toBe(true);
    expect(p.worker.breakerState).toBe("closed");
    expect(await dlqCount()).toBe(0);
  });

  it("replays dead letters back through once the fault is gone", async () => {
    await proxy({ "openai.retries": 0 });
    // Every call fails until the injected faults run out: each request is dead-lettered.
    dev.injectFaults(...Array.from({ length: 9 }, () => ({ status: 503 })));
    const ids = ["rp-1", "rp-2", "rp-3"];
    await Promise.all(ids.map((id) => client.submit(`replay me ${id}`, { id })));
    await eventually(async () => (await dlqCount()) === 3, 20_000, "three dead letters");
    const failed = await Promise.all(ids.map((id) => client.result(id)));
    expect(failed.every((r) => r?.ok === false && r.code === 503)).toBe(true);
    for (const d of await dlq.list()) await dlq.replay(d);
    expect(await dlqCount()).toBe(0);
    await eventually(
      async () => (await Promise.all(ids.map((id) => client.result(id)))).every((r) => r?.ok),
      20_000,
      "replayed results",
    );
    await settled();
    expect(await dlqCount()).toBe(0);
  });

  it("completes every request when nats-server is killed and restarted mid-load", async () => {
    dev.setLatency(50);
    await proxy({ "worker.concurrency": 16 });
    const N = 200;
    const ids = Array.from({ length: N }, (_, i) => `nr-${i}`);
    await Promise.all(ids.map((id) => client.submit(`restart ${id}`, { id })));
    await eventually(() => dev.stats().ok >= 40, 20_000, "some progress");
    await server.kill();
    await server.restart();
    await eventually(
      async () => {
        try {
          const jsm = await jetstreamManager(nc);
          return (await jsm.streams.info("OPENAI_RESULTS")).state.messages === N;
        } catch {
          return false;
        }
      },
      45_000,
      "all results",
    );
    await settled();
    const results = await Promise.all(ids.map((id) => client.result(id)));
    expect(results.filter((r) => r?.ok).length).toBe(N);
    expect(await dlqCount()).toBe(0);
  });
});
