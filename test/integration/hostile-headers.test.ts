/**
 * Client-set `Nats-*` headers (issue 12, item 1). The server interprets them on every
 * publish: a `Nats-Expected-Stream` copied from a request into its dead letter, its
 * re-queued copy or the shim's write makes that publish fail, so the request could never
 * be settled. Only an allow-list of client headers is copied (src/protocol/headers.ts).
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, type NatsServerHandle } from "../helpers/nats-server.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import {
  applyStreams,
  eventually,
  makeStreamsDir,
  startTestProxy,
  testClient,
} from "../helpers/proxy.js";
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
const MAX_DELIVER = 2;
const streams = makeStreamsDir({ ackWaitMs: 2000, maxDeliver: MAX_DELIVER });
const proxies: Proxy[] = [];

beforeAll(async () => {
  [server, dev] = await Promise.all([startNatsServer(), startDevOpenAI()]);
  ({ client, nc } = await testClient(server.url));
  await applyStreams(nc, streams.dir);
  dlq = new DeadLetters(nc, await jetstreamManager(nc), {
    dlqStream: "OPENAI_DLQ",
    dlqPrefix: "openai.dlq",
    requestsPrefix: "openai.requests",
  });
});

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.stop(500)));
  dev.reset();
});

afterAll(async () => {
  await nc.close();
  await Promise.all([server.stop(), dev.close()]);
  streams.cleanup();
});

async function proxy(): Promise<Proxy> {
  const p = await startTestProxy({
    natsUrl: server.url,
    openaiUrl: dev.url,
    streamsDir: streams.dir,
  });
  proxies.push(p);
  return p;
}

/** The first message of `sub`, or an error after `ms`. */
async function first(sub: AsyncIterable<Msg>, ms = 10_000): Promise<Msg> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
  });
  const next = (async () => {
    for await (const m of sub) return m;
    throw new Error("subscription closed without a message");
  })();
  try {
    return await Promise.race([next, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function queueDrained(): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await eventually(
    async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
    15_000,
    "the request queue to drain",
  );
}

describe("client-set Nats-* headers", () => {
  it("a bad-JSON request carrying Nats-Expected-Stream ends with one dead letter and an error reply", async () => {
    await proxy();
    const inbox = createInbox();
    const sub = nc.subscribe(inbox);
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", inbox);
    // True for the request's own publish, so the server accepts it; false for every
    // other stream the proxy writes to.
    h.set("Nats-Expected-Stream", "OPENAI_REQUESTS");
    h.set("X-Custom", "not carried");
    await jetstream(nc).publish("openai.requests.expect-stream", sc.encode('{"messages": [ oops'), {
      msgID: "expect-stream",
      headers: h,
    });
    const reply = await first(sub);
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(/unparseable JSON/);
    await queueDrained();
    const letters = await dlq.list();
    expect(letters.map((d) => [d.id, d.code, d.attempts])).toEqual([["expect-stream", 400, 1]]);
    const d = letters[0]!;
    expect(d.headers.get("Nats-Expected-Stream")).toBe("");
    expect(d.headers.get("X-Custom")).toBe("");
    expect(d.headers.get("Reply-To")).toBe(inbox);
    expect(d.headers.get("Content-Type")).toBe("application/json");
    expect(sub.getProcessed()).toBe(1);
    sub.unsubscribe();
    expect(dev.stats().calls).toBe(0);
    await dlq.purge();
  });

  it("the shim accepts and answers a request carrying Nats-Expected-Stream: OPENAI_DLQ", async () => {
    await proxy();
    const h = headers();
    h.set("Nats-Expected-Stream", "OPENAI_DLQ");
    h.set("Nats-Expected-Last-Sequence", "1");
    const r = await nc.request("openai_requests", sc.encode("through the shim"), {
      timeout: 10_000,
      headers: h,
    });
    expect(r.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
    expect(sc.decode(r.data)).toBe("(dev-openai test double) You said: through the shim");
    expect(dev.stats().ok).toBe(1);
  });

  it("a poison message carrying Nats-Expected-Stream is still dead-lettered", async () => {
    // No proxy runs: the test itself plays the crashing worker, taking the message from
    // the proxy's consumer and never finishing it, until max_deliver.
    const h = headers();
    h.set("Nats-Expected-Stream", "OPENAI_REQUESTS");
    await jetstream(nc).publish("openai.requests.poison-expect", sc.encode("crash me"), {
      msgID: "poison-expect",
      headers: h,
    });
    const consumer = await jetstream(nc).consumers.get(
      "OPENAI_REQUESTS",
      "openai-proxy-default-normal",
    );
    for (let i = 1; i <= MAX_DELIVER; i++) {
      const m = await consumer.next({ expires: 5000 });
      expect(m?.info.deliveryCount).toBe(i);
      m!.nak();
    }
    // The next pull makes the server notice max_deliver and send the advisory, which
    // OPENAI_POISON keeps until a proxy handles it.
    expect(await consumer.next({ expires: 1000 })).toBeNull();
    const jsm = await jetstreamManager(nc);
    await eventually(
      async () => (await jsm.streams.info("OPENAI_POISON")).state.messages === 1,
      5_000,
      "the captured advisory",
    );
    await proxy();
    await eventually(
      async () => (await dlq.show("poison-expect")) !== null,
      15_000,
      "the dead letter",
    );
    const d = await dlq.show("poison-expect");
    expect([d?.code, d?.attempts]).toEqual([500, MAX_DELIVER]);
    expect(d?.error).toContain("poison");
    expect(d?.headers.get("Nats-Expected-Stream")).toBe("");
    expect((await client.result("poison-expect"))?.code).toBe(500);
    await queueDrained();
    await eventually(
      async () => (await jsm.streams.info("OPENAI_POISON")).state.messages === 0,
      5_000,
      "the advisory to be acked",
    );
    expect(dev.stats().calls).toBe(0);
  });
});
