/**
 * Failure semantics against a real nats-server and the local OpenAI-compatible server
 * with injected faults: retries honouring Retry-After, dead letters exactly once,
 * permanent errors without retries, expiry, auth pauses, DLQ replay, NATS restarts.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers, type Msg, type Subscription } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { sc, useRig } from "../helpers/rig.js";

const rig = useRig({
  streams: { ackWaitMs: 2000, maxDeliver: 3 },
  devReset: (dev) => {
    dev.setLatency(0);
    dev.setApiKey(undefined);
  },
  purge: ["OPENAI_RESULTS", "OPENAI_DLQ", "OPENAI_REQUESTS"],
});

/** Collects everything published to a fresh inbox. */
function collector(): { inbox: string; got: Msg[]; sub: Subscription; next: () => Promise<Msg> } {
  const inbox = createInbox();
  const got: Msg[] = [];
  const waiters: ((m: Msg) => void)[] = [];
  const sub = rig.nc.subscribe(inbox, {
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
  const jsm = await jetstreamManager(rig.nc);
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
  const jsm = await jetstreamManager(rig.nc);
  return (await jsm.streams.info("OPENAI_DLQ")).state.messages;
}

describe("transient failures", () => {
  it("waits at least the Retry-After of a 429, then succeeds", async () => {
    await rig.proxy();
    const c = collector();
    await rig.client.submit("rate limited [[status:429x1,retry:1]]", {
      id: "r429",
      replyTo: c.inbox,
    });
    const reply = await c.next();
    expect(sc.decode(reply.data)).toContain("You said: rate limited");
    const times = rig.dev.stats().callTimes;
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(1000);
    expect(await dlqCount()).toBe(0);
  });

  it("recovers from a burst of 500s without a dead letter", async () => {
    await rig.proxy();
    const c = collector();
    await rig.client.submit("burst [[status:500x3]]", { id: "burst", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error")).toBe("");
    expect(sc.decode(reply.data)).toContain("You said: burst");
    expect(rig.dev.stats().calls).toBe(4);
    await settled();
    expect(await dlqCount()).toBe(0);
  });

  it("dead-letters 500s past max_deliver exactly once, with one error reply", async () => {
    await rig.proxy({ "openai.retries": 1 });
    const c = collector();
    await rig.client.submit("always failing [[status:500]]", { id: "dead500", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("500");
    expect(reply.headers?.get("Proxy-Attempts")).toBe("3");
    await settled();
    // Nothing is left that could produce another reply or dead letter.
    expect(c.got).toHaveLength(1);
    expect(rig.dev.stats().calls).toBe(6); // 3 deliveries × (1 call + 1 retry)
    const list = await rig.dlq.list();
    expect(list.map((d) => [d.id, d.code, d.attempts])).toEqual([["dead500", 500, 3]]);
    expect(list[0]!.error).toMatch(/upstream 500/);
    const r = await rig.client.result("dead500");
    expect(r).toMatchObject({ ok: false, code: 500 });
  });
});

describe("permanent failures", () => {
  it("answers an unknown model with 404, one dead letter, no retries", async () => {
    await rig.proxy();
    const c = collector();
    await rig.client.submit(
      { model: "gpt-nonexistent", messages: [{ role: "user", content: "hi" }] },
      { id: "m404", replyTo: c.inbox },
    );
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("404");
    expect(reply.headers?.get("Nats-Service-Error")).toContain('model "gpt-nonexistent" not found');
    expect(JSON.parse(sc.decode(reply.data))).toMatchObject({ error: { code: 404 } });
    await settled();
    expect(rig.dev.stats().calls).toBe(1);
    expect(c.got).toHaveLength(1);
    expect((await rig.dlq.list()).map((d) => d.code)).toEqual([404]);
  });

  it("answers an upstream 400 once, with one dead letter and no retries", async () => {
    await rig.proxy();
    const c = collector();
    await rig.client.submit("bad for the API [[status:400]]", { id: "u400", replyTo: c.inbox });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    await settled();
    expect(rig.dev.stats().calls).toBe(1);
    expect((await rig.dlq.list()).map((d) => [d.id, d.code])).toEqual([["u400", 400]]);
  });

  it("rejects malformed JSON without calling the API, keeping the original body in the dead letter", async () => {
    await rig.proxy();
    const c = collector();
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", c.inbox);
    await jetstream(rig.nc).publish("openai.requests.badjson", sc.encode('{"messages": [ oops'), {
      msgID: "badjson",
      headers: h,
    });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(/unparseable JSON/);
    await settled();
    expect(rig.dev.stats().calls).toBe(0);
    const d = await rig.dlq.show("badjson");
    expect(sc.decode(d!.data)).toBe('{"messages": [ oops');
    expect(d!.headers.get("Reply-To")).toBe(c.inbox);
    expect(d!.headers.get("Proxy-Failed-At")).not.toBe("");
  });

  it("never calls the API for an expired request (408)", async () => {
    await rig.proxy();
    const c = collector();
    await rig.client.submit("too late", {
      id: "exp",
      replyTo: c.inbox,
      expiresAt: Date.now() - 1000,
    });
    const reply = await c.next();
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("408");
    await settled();
    expect(rig.dev.stats().calls).toBe(0);
    expect((await rig.dlq.list()).map((d) => d.code)).toEqual([408]);
  });
});

describe("outages", () => {
  it("pauses on 401 without dead-lettering, and completes everything once the key is accepted", async () => {
    rig.dev.setApiKey("a-key-the-proxy-does-not-have");
    const p = await rig.proxy({ "worker.breaker.probe_interval_ms": 100 });
    const ids = Array.from({ length: 10 }, (_, i) => `auth-${i}`);
    await Promise.all(ids.map((id) => rig.client.submit(`needs auth ${id}`, { id })));
    await eventually(() => p.worker.breakerState === "open", 10_000, "the breaker to open");
    // While paused the proxy probes the API (GET /models) instead of pulling requests.
    const probes = rig.dev.stats().modelCalls;
    await eventually(() => rig.dev.stats().modelCalls >= probes + 2, 5_000, "two probes");
    const calls = rig.dev.stats().calls;
    await eventually(() => rig.dev.stats().modelCalls >= probes + 3, 5_000, "a third probe");
    expect(rig.dev.stats().calls).toBe(calls); // no request was pulled while paused
    expect(await dlqCount()).toBe(0);
    rig.dev.setApiKey(undefined);
    const results = await Promise.all(
      ids.map((id) => rig.client.result(id, { wait: true, timeoutMs: 20_000 })),
    );
    expect(results.every((r) => r?.ok)).toBe(true);
    expect(p.worker.breakerState).toBe("closed");
    expect(await dlqCount()).toBe(0);
  });

  it("replays dead letters back through once the fault is gone", async () => {
    await rig.proxy({ "openai.retries": 0 });
    // Every call fails until the injected faults run out: each request is dead-lettered.
    rig.dev.injectFaults(...Array.from({ length: 9 }, () => ({ status: 503 })));
    const ids = ["rp-1", "rp-2", "rp-3"];
    await Promise.all(ids.map((id) => rig.client.submit(`replay me ${id}`, { id })));
    await eventually(async () => (await dlqCount()) === 3, 20_000, "three dead letters");
    const failed = await Promise.all(ids.map((id) => rig.client.result(id)));
    expect(failed.every((r) => r?.ok === false && r.code === 503)).toBe(true);
    for (const d of await rig.dlq.list()) await rig.dlq.replay(d);
    expect(await dlqCount()).toBe(0);
    await eventually(
      async () => (await Promise.all(ids.map((id) => rig.client.result(id)))).every((r) => r?.ok),
      20_000,
      "replayed results",
    );
    await settled();
    expect(await dlqCount()).toBe(0);
  });

  it("completes every request when nats-server is killed and restarted mid-load", async () => {
    rig.dev.setLatency(50);
    await rig.proxy({ "worker.concurrency": 16 });
    const N = 200;
    const ids = Array.from({ length: N }, (_, i) => `nr-${i}`);
    await Promise.all(ids.map((id) => rig.client.submit(`restart ${id}`, { id })));
    await eventually(() => rig.dev.stats().ok >= 40, 20_000, "some progress");
    await rig.server.kill();
    await rig.server.restart();
    await eventually(
      async () => {
        try {
          const jsm = await jetstreamManager(rig.nc);
          return (await jsm.streams.info("OPENAI_RESULTS")).state.messages === N;
        } catch {
          return false;
        }
      },
      45_000,
      "all results",
    );
    await settled();
    const results = await Promise.all(ids.map((id) => rig.client.result(id)));
    expect(results.filter((r) => r?.ok).length).toBe(N);
    expect(await dlqCount()).toBe(0);
  });
});
