/**
 * A stalled upstream must not pin a slot (issue 12, item 2). The SDK's timeout ends
 * when the response headers arrive, and working() keeps the message alive, so an API
 * that stops sending mid-answer used to hold a slot for good. Now an idle timeout
 * between stream chunks, a deadline per call and a cap per delivery end the attempt as
 * a transient 504: retried, and dead-lettered only at max_deliver.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, type Msg } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { sc, useRig } from "../helpers/rig.js";

const ANSWER = "(dev-openai test double) You said: ";
const rig = useRig({
  streams: { ackWaitMs: 2000, maxDeliver: 2 },
  applyStreams: true,
  // One slot: a pinned slot shows as the next request never being served.
  flags: { "worker.concurrency": 1, "openai.timeout_ms": 60_000 },
  afterEach: (rig) => rig.dlq.purge(),
});

/** Streams a request; resolves with the final message (the first that is neither a delta nor a restart). */
async function streamed(id: string, prompt: string): Promise<{ final: Msg; deltas: number }> {
  const inbox = createInbox();
  const sub = rig.nc.subscribe(inbox);
  await rig.client.submit(
    { messages: [{ role: "user", content: prompt }], stream: true },
    { id, replyTo: inbox },
  );
  let deltas = 0;
  const timer = setTimeout(() => sub.unsubscribe(), 20_000);
  try {
    for await (const m of sub) {
      if (m.headers?.get("Openai-Stream") === "delta") deltas++;
      // A retry after deltas went out opens with a restart (issue 14): not the end.
      else if (m.headers?.get("Openai-Stream") !== "restart") return { final: m, deltas };
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  throw new Error(`no final reply for ${id} within 20 s (${deltas} deltas)`);
}

/** With one slot, a request after a stall completes only if the slot was freed. */
async function slotIsFree(id: string): Promise<void> {
  const r = await rig.client.request(`next one ${id}`, { id, timeoutMs: 10_000 });
  expect(r).toMatchObject({ ok: true, body: `${ANSWER}next one ${id}` });
}

describe("a stalled upstream", () => {
  it("a stream that stops mid-answer is retried (stream_idle_timeout_ms) and then succeeds", async () => {
    await rig.proxy({ "openai.stream_idle_timeout_ms": 300 });
    const prompt = "stall once [[stall:2x1]]";
    const { final, deltas } = await streamed("stall-1", prompt);
    expect(final.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
    expect(final.headers?.get("Openai-Stream")).toBe("done");
    expect(final.headers?.get("Proxy-Attempts")).toBe("1"); // retried in-process
    const body = JSON.parse(sc.decode(final.data)) as {
      choices: { message: { content: string } }[];
    };
    expect(body.choices[0]?.message.content).toBe(`${ANSWER}${prompt}`);
    expect(deltas).toBeGreaterThan(2); // the stalled attempt's 2, then the full answer's
    expect(rig.dev.stats()).toMatchObject({ calls: 2, ok: 1 });
    await slotIsFree("after-stall-1");
  });

  it("a stream that always stalls is dead-lettered with 504 after max_deliver, and the slot is freed", async () => {
    await rig.proxy({ "openai.stream_idle_timeout_ms": 300, "openai.retries": 0 });
    const { final } = await streamed("stall-always", "stall forever [[stall:2]]");
    expect(final.headers?.get("Nats-Service-Error-Code")).toBe("504");
    expect(final.headers?.get("Nats-Service-Error")).toMatch(/stream_idle_timeout_ms/);
    expect(final.headers?.get("Proxy-Attempts")).toBe("2");
    expect(rig.dev.stats().calls).toBe(2); // one call per delivery, max_deliver 2
    const letters = await rig.dlq.list();
    expect(letters.map((d) => [d.id, d.code, d.attempts])).toEqual([["stall-always", 504, 2]]);
    await slotIsFree("after-stall-always");
  });

  it("a plain answer whose body never comes is cut by call_deadline_ms (fetch transport)", async () => {
    // Built-in fetch resolves at the headers: the SDK's timeout_ms no longer covers the body.
    await rig.proxy({ "openai.transport": "fetch", "openai.call_deadline_ms": 500 });
    const r = await rig.client.request("body never comes [[stall:0x1]]", {
      id: "deadline-1",
      timeoutMs: 10_000,
    });
    expect(r).toMatchObject({ ok: true, body: `${ANSWER}body never comes [[stall:0x1]]` });
    expect(rig.dev.stats()).toMatchObject({ calls: 2, ok: 1 });
    await slotIsFree("after-deadline");
  });

  it("worker.max_delivery_ms ends a delivery that outlives it; the redelivery succeeds", async () => {
    await rig.proxy({
      "openai.stream_idle_timeout_ms": 60_000,
      "openai.call_deadline_ms": 60_000,
      "worker.max_delivery_ms": 1000,
    });
    const t0 = Date.now();
    const { final } = await streamed("capped-1", "capped [[stall:2x1]]");
    expect(final.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
    expect(final.headers?.get("Proxy-Attempts")).toBe("2"); // the first delivery was handed back
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(rig.dev.stats()).toMatchObject({ calls: 2, ok: 1 });
    const jsm = await jetstreamManager(rig.nc);
    await eventually(
      async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
      5_000,
      "the queue to drain",
    );
    expect(await rig.dlq.list()).toEqual([]);
    await slotIsFree("after-capped");
  });

  it("a delivery ended by the cap is a transient failure, not a shutdown: 504 at max_deliver", async () => {
    // Handled like a shutdown abort, it would be nak'ed without a verdict until the
    // poison path answered 500.
    await rig.proxy({
      "openai.stream_idle_timeout_ms": 60_000,
      "worker.max_delivery_ms": 500,
      "openai.retries": 0,
    });
    const { final } = await streamed("capped-always", "capped for ever [[stall:2]]");
    expect(final.headers?.get("Nats-Service-Error-Code")).toBe("504");
    expect(final.headers?.get("Nats-Service-Error")).toBe(
      "delivery exceeded worker.max_delivery_ms (500 ms)",
    );
    expect(final.headers?.get("Proxy-Attempts")).toBe("2");
    expect((await rig.dlq.list()).map((d) => [d.id, d.code])).toEqual([["capped-always", 504]]);
    expect(rig.dev.stats().calls).toBe(2);
    await slotIsFree("after-capped-always");
  });
});
