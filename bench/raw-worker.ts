/**
 * The raw baseline of the benchmark: the shortest correct pipeline on the same streams,
 * written the way the JetStream notes (§2) recommend and nothing more:
 *
 *   fetch for free slots → openai SDK with its defaults → publish the result (await PubAck)
 *   → reply (core publish to Reply-To) → ack
 *
 * No retries policy, no breaker, no dead letters, no metrics, no logging. Run by bench/run.ts
 * as a child process so that its CPU time and RSS can be read from /proc like the proxy's.
 *
 * Environment: NATS_URL, OPENAI_BASE_URL, OPENAI_API_KEY, CONCURRENCY (default 64).
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { JsMsg } from "@nats-io/jetstream";
import OpenAI from "openai";

const natsUrl = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const concurrency = Number(process.env.CONCURRENCY ?? 64);
const model = process.env.OPENAI_MODEL ?? "gpt-4o-mini";

const nc = await connect({ servers: natsUrl, name: "bench-raw-worker" });
const js = jetstream(nc);
const consumer = await js.consumers.get("OPENAI_REQUESTS", "openai-proxy");
// Defaults on purpose (retries 2, timeout 10 min): "the SDK as anyone would use it".
const openai = new OpenAI({
  apiKey: process.env.OPENAI_API_KEY ?? "x",
  baseURL: process.env.OPENAI_BASE_URL,
});
const enc = new TextEncoder();

let inflight = 0;
let wake: (() => void) | undefined;
let running = true;

async function handle(m: JsMsg): Promise<void> {
  try {
    const id = m.subject.slice(m.subject.lastIndexOf(".") + 1);
    const c = await openai.chat.completions.create({
      model,
      messages: [{ role: "user", content: m.string() }],
    });
    const data = enc.encode(c.choices[0]?.message.content ?? "");
    await js.publish(`openai.results.${id}`, data);
    const replyTo = m.headers?.get("Reply-To") ?? "";
    if (replyTo) nc.publish(replyTo, data);
    m.ack();
  } catch {
    m.nak(1000);
  } finally {
    inflight--;
    const w = wake;
    wake = undefined;
    w?.();
  }
}

process.once("SIGTERM", () => {
  running = false;
  process.exit(0);
});

while (running) {
  while (inflight >= concurrency) await new Promise<void>((r) => (wake = r));
  try {
    const batch = await consumer.fetch({ max_messages: concurrency - inflight, expires: 1000 });
    for await (const m of batch) {
      inflight++;
      void handle(m);
    }
  } catch {
    await new Promise((r) => setTimeout(r, 100));
  }
}
