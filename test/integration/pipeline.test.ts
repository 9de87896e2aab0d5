/**
 * The durable request path end to end, against a real nats-server and the local
 * OpenAI-compatible server: compat shim, durable request with Reply-To,
 * fire-and-forget, the concurrency bound, and ack-after-publish.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { first, sc, useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";
import type { Outputs } from "../../src/worker/outputs.js";
import type { WorkMsg } from "../../src/worker/work-msg.js";

const rig = useRig({
  streams: { ackWaitMs: 2000 },
  devReset: (dev) => dev.setLatency(0),
  purge: ["OPENAI_RESULTS"],
});

describe("request path", () => {
  it("answers an unchanged client of the original tool through the compat shim (text in, text out)", async () => {
    await rig.proxy();
    const r = await rig.nc.request("openai_requests", sc.encode("List the last 10 presidents"), {
      timeout: 10_000,
    });
    expect(sc.decode(r.data)).toBe(
      "(dev-openai test double) You said: List the last 10 presidents",
    );
    expect(r.headers?.get("Openai-Model")).toBe("gpt-4o-mini");
    expect(r.headers?.get("Proxy-Attempts")).toBe("1");
    expect(r.headers?.get("Nats-Service-Error")).toBe("");
    // The request went through the work queue: its result is stored under its id.
    const id = r.headers!.get("Nats-Msg-Id");
    const stored = await rig.client.result(id);
    expect(stored?.body).toBe("(dev-openai test double) You said: List the last 10 presidents");
  });

  it("round-trips a JSON request published straight into the stream with a Reply-To", async () => {
    await rig.proxy();
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", inbox);
    const body = {
      model: "gpt-4o",
      messages: [{ role: "user", content: "hello json" }],
      temperature: 0.2,
    };
    const js = jetstream(rig.nc);
    const pa = await js.publish("openai.requests.json-1", sc.encode(JSON.stringify(body)), {
      msgID: "json-1",
      headers: h,
    });
    expect(pa.duplicate).toBe(false);
    const reply = await first(sub);
    const completion = JSON.parse(sc.decode(reply.data)) as {
      object: string;
      model: string;
      choices: { message: { content: string } }[];
    };
    expect(completion.object).toBe("chat.completion");
    expect(completion.model).toBe("gpt-4o");
    expect(completion.choices[0]!.message.content).toBe(
      "(dev-openai test double) You said: hello json",
    );
    expect(reply.headers?.get("Nats-Msg-Id")).toBe("json-1");
    expect(reply.headers?.get("Openai-Request-Id")).toMatch(/^req_dev_/);
    expect(reply.headers?.get("Openai-Usage")).toMatch(/^prompt=\d+ completion=\d+ total=\d+$/);
    expect(reply.headers?.get("Content-Type")).toBe("application/json");
  });

  it("stores a fire-and-forget request's result in OPENAI_RESULTS", async () => {
    await rig.proxy();
    const s = await rig.client.submit("fire and forget", { id: "ff-1" });
    expect(s).toMatchObject({ id: "ff-1", duplicate: false });
    const r = await rig.client.result("ff-1", { wait: true, timeoutMs: 10_000 });
    expect(r).toMatchObject({
      ok: true,
      body: "(dev-openai test double) You said: fire and forget",
      attempts: 1,
    });
    const jsm = await jetstreamManager(rig.nc);
    // The ack follows the result's PubAck: the work queue empties right after.
    await eventually(
      async () => (await jsm.streams.info("OPENAI_REQUESTS")).state.messages === 0,
      5_000,
      "the ack",
    );
  });

  it("never has more than worker.concurrency upstream calls or deliveries at once", async () => {
    const C = 4;
    rig.dev.setLatency(100);
    const N = 40;
    await Promise.all(
      Array.from({ length: N }, (_, i) => rig.client.submit(`bounded ${i}`, { id: `b-${i}` })),
    );
    const jsm = await jetstreamManager(rig.nc);
    let maxAckPending = 0;
    let maxInFlight = 0;
    const started: { proxy?: Proxy } = {};
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxInFlight = Math.max(maxInFlight, started.proxy?.worker.inFlight ?? 0);
        const ci = await jsm.consumers.info("OPENAI_REQUESTS", "openai-proxy-default-normal");
        maxAckPending = Math.max(maxAckPending, ci.num_ack_pending);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    started.proxy = await rig.proxy({ "worker.concurrency": C });
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        rig.client.result(`b-${i}`, { wait: true, timeoutMs: 20_000 }),
      ),
    );
    sampling = false;
    await sampler;
    expect(rig.dev.stats().ok).toBe(N);
    expect(rig.dev.stats().maxInFlight).toBe(C);
    expect(maxInFlight).toBe(C);
    // The server's count also includes acks still travelling to it, so it may briefly
    // exceed C; what matters is that the backlog of 40 is never pulled ahead.
    expect(maxAckPending).toBeGreaterThan(0);
    expect(maxAckPending).toBeLessThan(2 * C);
  });

  it("redelivers to another instance when a proxy dies after the API answered but before its ack", async () => {
    // Proxy A: stores nothing and never acks — it "dies" right after the API answered.
    let release: (() => void) | undefined;
    const dead = new Promise<void>((r) => (release = r));
    const a = await rig.proxy(
      {},
      {
        wrapOutputs: (o: Outputs): Outputs => ({
          ...o,
          storeResult: async () => {
            await dead;
            throw new Error("proxy A is gone");
          },
        }),
      },
    );
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    await rig.client.submit("survive a crash", { id: "crash-1", replyTo: inbox });
    await eventually(() => rig.dev.stats().ok === 1, 10_000, "proxy A's upstream call");
    // A hard stop: the connection goes away without an ack.
    await a.nc.close();
    const b = await rig.proxy();
    const reply = await first(sub);
    expect(sc.decode(reply.data)).toBe("(dev-openai test double) You said: survive a crash");
    expect(reply.headers?.get("Proxy-Attempts")).toBe("2"); // the second delivery answered
    expect(rig.dev.stats().ok).toBe(2); // the API was called again: A died before the PubAck
    const r = await rig.client.result("crash-1");
    expect(r?.ok).toBe(true);
    release!();
    void b;
  });

  it("answers a request with one answer when a delivery that outlived ack_wait and its redelivery both call the API", async () => {
    // Proxy A's progress acks are lost (as when the consumer's leader is down) and its
    // result store waits until B, which got the redelivery, has answered and stored.
    let release: (() => void) | undefined;
    const late = new Promise<void>((r) => (release = r));
    let aStored = false;
    await rig.proxy(
      { "worker.concurrency": 1 },
      {
        wrapMessage: (m: WorkMsg): WorkMsg => ({
          subject: m.subject,
          seq: m.seq,
          data: m.data,
          headers: m.headers,
          redelivered: m.redelivered,
          info: m.info,
          ack: () => m.ack(),
          nak: (ms?: number) => m.nak(ms),
          working: () => undefined,
          term: (reason?: string) => m.term(reason),
        }),
        wrapOutputs: (o: Outputs): Outputs => ({
          ...o,
          storeResult: async (id, r, expectLastSeq) => {
            await late;
            await o.storeResult(id, r, expectLastSeq);
            aStored = true;
          },
        }),
      },
    );
    const inbox = createInbox();
    const replies: Msg[] = [];
    const sub = rig.nc.subscribe(inbox, { callback: (_e, m) => void replies.push(m) });
    await rig.client.submit("two deliveries", { id: "race-1", replyTo: inbox });
    await eventually(() => rig.dev.stats().ok === 1, 10_000, "proxy A's upstream call");
    await rig.proxy(); // B: gets the redelivery once A's ack_wait has run out
    await eventually(() => replies.length === 1, 10_000, "B's reply");
    expect(rig.dev.stats().ok).toBe(2);
    release!();
    await eventually(() => replies.length === 2, 10_000, "A's reply");
    const ids = replies.map((m) => m.headers?.get("Openai-Request-Id"));
    expect(ids[0]).not.toBe("");
    // A lost the race: it sent the answer B stored, and stored nothing of its own.
    expect(ids[1]).toBe(ids[0]);
    expect(aStored).toBe(false);
    expect(replies.map((m) => m.headers?.get("Proxy-Request-Seq"))).toEqual([
      replies[0]!.headers?.get("Proxy-Request-Seq"),
      replies[0]!.headers?.get("Proxy-Request-Seq"),
    ]);
    const r = await rig.client.result("race-1");
    expect(r?.ok).toBe(true);
    const jsm = await jetstreamManager(rig.nc);
    const stored = await jsm.streams.getMessage("OPENAI_RESULTS", {
      last_by_subj: "openai.results.race-1",
    });
    expect(stored?.header.get("Openai-Request-Id")).toBe(ids[0]);
    sub.unsubscribe();
  });

  it("re-sends a stored result without calling the API when the proxy died after the PubAck", async () => {
    let release: (() => void) | undefined;
    const dead = new Promise<void>((r) => (release = r));
    const a = await rig.proxy(
      {},
      {
        wrapOutputs: (o: Outputs): Outputs => ({
          ...o,
          reply: () => undefined,
          storeResult: async (id, r) => {
            await o.storeResult(id, r); // PubAck received…
            await dead; // …and then the process dies before reply and ack
            throw new Error("proxy A is gone");
          },
        }),
      },
    );
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    await rig.client.submit("stored then crash", { id: "crash-2", replyTo: inbox });
    await eventually(
      async () => (await rig.client.result("crash-2")) !== null,
      10_000,
      "the stored result",
    );
    await a.nc.close();
    await rig.proxy();
    const reply = await first(sub);
    expect(sc.decode(reply.data)).toBe("(dev-openai test double) You said: stored then crash");
    expect(rig.dev.stats().ok).toBe(1); // no second upstream call
    release!();
  });
});
