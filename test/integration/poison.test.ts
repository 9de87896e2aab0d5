/**
 * Poison handling decides by the stored success of the same message (issue 12, item 5).
 * A max-delivered message whose own success is stored was answered and only lost its
 * ack: it is removed, its result kept. Any other stored result (an old error of a
 * replayed request, another message's success under the same id) proves nothing: the
 * message is dead-lettered, never silently deleted. The situations are built directly
 * on a real server; no proxy runs.
 */
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, type NatsServerHandle } from "../helpers/nats-server.js";
import { applyStreams, makeStreamsDir, memoryLogger, testClient } from "../helpers/proxy.js";
import type { ProxyClient } from "../../src/client/client.js";
import { natsOutputs, type Outputs } from "../../src/worker/outputs.js";
import { deadLetterPoison } from "../../src/worker/poison.js";
import { isAlreadyGone } from "../../src/nats/errors.js";

const sc = {
  encode: (s: string) => new TextEncoder().encode(s),
  decode: (d: Uint8Array) => new TextDecoder().decode(d),
};
let server: NatsServerHandle;
let nc: NatsConnection;
let jsm: JetStreamManager;
let client: ProxyClient;
let out: Outputs;
// max_deliver 1: one unfinished delivery makes a message poison.
const streams = makeStreamsDir({ ackWaitMs: 2000, maxDeliver: 1 });
const opts = {
  stream: "OPENAI_REQUESTS",
  consumer: "*",
  queue: "openai-proxy-poison",
};
const { log } = memoryLogger();

beforeAll(async () => {
  server = await startNatsServer();
  ({ client, nc } = await testClient(server.url));
  await applyStreams(nc, streams.dir);
  jsm = await jetstreamManager(nc);
  out = natsOutputs(nc, jetstream(nc), jsm, {
    results: "OPENAI_RESULTS",
    dlq: "OPENAI_DLQ",
    resultsPrefix: "openai.results",
    dlqPrefix: "openai.dlq",
    requestsPrefix: "openai.requests",
  });
});

afterEach(async () => {
  for (const s of ["OPENAI_REQUESTS", "OPENAI_RESULTS", "OPENAI_DLQ", "OPENAI_POISON"])
    await jsm.streams.purge(s);
});

afterAll(async () => {
  await nc.close();
  await server.stop();
  streams.cleanup();
});

/** Queues a request; resolves with its stream sequence. */
async function request(id: string, text: string): Promise<number> {
  return (await jetstream(nc).publish(`openai.requests.${id}`, sc.encode(text), { msgID: id })).seq;
}

/** Stores a result for `id` as the worker would: a success carries the producing message's seq. */
async function storeResult(
  id: string,
  body: string,
  o: { seq?: number; errorCode?: number },
): Promise<void> {
  const h = headers();
  h.set("Nats-Msg-Id", id);
  h.set("Content-Type", "text/plain; charset=utf-8");
  if (o.seq !== undefined) h.set("Proxy-Request-Seq", String(o.seq));
  if (o.errorCode !== undefined) {
    h.set("Nats-Service-Error", body);
    h.set("Nats-Service-Error-Code", String(o.errorCode));
  }
  await jetstream(nc).publish(`openai.results.${id}`, sc.encode(body), { headers: h });
}

async function inQueue(seq: number): Promise<boolean> {
  try {
    return (await jsm.streams.getMessage("OPENAI_REQUESTS", { seq })) !== null;
  } catch (e) {
    if (isAlreadyGone(e)) return false;
    throw e;
  }
}

const dlqIds = async () => {
  const info = await jsm.streams.info("OPENAI_DLQ", { subjects_filter: ">" });
  return Object.keys(info.state.subjects ?? {}).sort();
};

describe("the MAX_DELIVERIES advisory path", () => {
  it("removes a message whose own success is stored, keeping that success", async () => {
    const seq = await request("answered", "a question answered before the ack was lost");
    await storeResult("answered", "the answer", { seq });
    await deadLetterPoison(jsm, out, opts, seq, 5, log);
    expect(await inQueue(seq)).toBe(false);
    expect(await client.result("answered")).toMatchObject({ ok: true, body: "the answer" });
    expect(await dlqIds()).toEqual([]);
  });

  it("removes a message whose own error verdict and dead letter are stored, keeping both", async () => {
    // The worker's verdict on the last delivery (dead letter, error result, reply) was
    // written and then the ack was lost: the real error must not become "poison".
    const seq = await request("settled", "a request refused on its last delivery");
    await out.deadLetter(
      "settled",
      `settled.dlq.${seq}`,
      { headers: undefined, data: sc.encode("a request refused on its last delivery") },
      { code: 502, message: "upstream said no", attempts: 5, subject: "openai.requests.settled" },
    );
    await storeResult("settled", "upstream said no", { seq, errorCode: 502 });
    await deadLetterPoison(jsm, out, opts, seq, 5, log);
    expect(await inQueue(seq)).toBe(false);
    expect(await client.result("settled")).toMatchObject({ ok: false, code: 502 });
    const dl = await jsm.streams.getMessage("OPENAI_DLQ", { last_by_subj: "openai.dlq.settled" });
    expect(dl?.header.get("Nats-Service-Error")).toBe("upstream said no");
  });

  it.each([
    ["another message's success under the same id", "reused", { seqOffset: -1 }],
    ["an old error of a replayed request", "replayed", { errorCode: 400 }],
    [
      "an error of this very message (no dead letter)",
      "own-error",
      { errorCode: 502, seqOffset: 0 },
    ],
  ])("dead-letters a message when the stored result is %s", async (_, id, r) => {
    const seq = await request(id, "never finished");
    const seqOf = "seqOffset" in r ? seq + r.seqOffset : undefined;
    await storeResult(id, "something else", {
      ...(seqOf !== undefined ? { seq: seqOf } : {}),
      ...("errorCode" in r ? { errorCode: r.errorCode } : {}),
    });
    await deadLetterPoison(jsm, out, opts, seq, 5, log);
    expect(await inQueue(seq)).toBe(false);
    expect(await dlqIds()).toEqual([`openai.dlq.${id}`]);
    const res = await client.result(id);
    expect(res).toMatchObject({ ok: false, code: 500 });
    expect(res?.error).toContain("poison");
  });
});
