/**
 * Client-set `Nats-*` headers (issue 12, item 1). The server interprets them on every
 * publish: a `Nats-Expected-Stream` copied from a request into its dead letter, its
 * re-queued copy or the shim's write makes that publish fail, so the request could never
 * be settled. Only an allow-list of client headers is copied (src/protocol/headers.ts).
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { first, sc, useRig } from "../helpers/rig.js";

const MAX_DELIVER = 2;
const rig = useRig({ streams: { ackWaitMs: 2000, maxDeliver: MAX_DELIVER }, applyStreams: true });

async function queueDrained(): Promise<void> {
  const jsm = await jetstreamManager(rig.nc);
  await eventually(
    async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
    15_000,
    "the request queue to drain",
  );
}

describe("client-set Nats-* headers", () => {
  it("a bad-JSON request carrying Nats-Expected-Stream ends with one dead letter and an error reply", async () => {
    await rig.proxy();
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox);
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", inbox);
    // True for the request's own publish, so the server accepts it; false for every
    // other stream the proxy writes to.
    h.set("Nats-Expected-Stream", "OPENAI_REQUESTS");
    h.set("X-Custom", "not carried");
    await jetstream(rig.nc).publish(
      "openai.requests.expect-stream",
      sc.encode('{"messages": [ oops'),
      {
        msgID: "expect-stream",
        headers: h,
      },
    );
    const reply = await first(sub, 10_000);
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(/unparseable JSON/);
    await queueDrained();
    const letters = await rig.dlq.list();
    expect(letters.map((d) => [d.id, d.code, d.attempts])).toEqual([["expect-stream", 400, 1]]);
    const d = letters[0]!;
    expect(d.headers.get("Nats-Expected-Stream")).toBe("");
    expect(d.headers.get("X-Custom")).toBe("");
    expect(d.headers.get("Reply-To")).toBe(inbox);
    expect(d.headers.get("Content-Type")).toBe("application/json");
    expect(sub.getProcessed()).toBe(1);
    sub.unsubscribe();
    expect(rig.dev.stats().calls).toBe(0);
    await rig.dlq.purge();
  });

  it("the shim accepts and answers a request carrying Nats-Expected-Stream: OPENAI_DLQ", async () => {
    await rig.proxy();
    const h = headers();
    h.set("Nats-Expected-Stream", "OPENAI_DLQ");
    h.set("Nats-Expected-Last-Sequence", "1");
    const r = await rig.nc.request("openai_requests", sc.encode("through the shim"), {
      timeout: 10_000,
      headers: h,
    });
    expect(r.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
    expect(sc.decode(r.data)).toBe("(dev-openai test double) You said: through the shim");
    expect(rig.dev.stats().ok).toBe(1);
  });

  it("a poison message carrying Nats-Expected-Stream is still dead-lettered", async () => {
    // No proxy runs: the test itself plays the crashing worker, taking the message from
    // the proxy's consumer and never finishing it, until max_deliver.
    const h = headers();
    h.set("Nats-Expected-Stream", "OPENAI_REQUESTS");
    await jetstream(rig.nc).publish("openai.requests.poison-expect", sc.encode("crash me"), {
      msgID: "poison-expect",
      headers: h,
    });
    const consumer = await jetstream(rig.nc).consumers.get(
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
    const jsm = await jetstreamManager(rig.nc);
    await eventually(
      async () => (await jsm.streams.info("OPENAI_POISON")).state.messages === 1,
      5_000,
      "the captured advisory",
    );
    await rig.proxy();
    await eventually(
      async () => (await rig.dlq.show("poison-expect")) !== null,
      15_000,
      "the dead letter",
    );
    const d = await rig.dlq.show("poison-expect");
    expect([d?.code, d?.attempts]).toEqual([500, MAX_DELIVER]);
    expect(d?.error).toContain("poison");
    expect(d?.headers.get("Nats-Expected-Stream")).toBe("");
    expect((await rig.client.result("poison-expect"))?.code).toBe(500);
    await queueDrained();
    await eventually(
      async () => (await jsm.streams.info("OPENAI_POISON")).state.messages === 0,
      5_000,
      "the advisory to be acked",
    );
    expect(rig.dev.stats().calls).toBe(0);
  });
});
