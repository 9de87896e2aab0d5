/**
 * Durable request: publish straight into the work-queue stream with a Reply-To header and
 * wait on that subject. This is what `nats-openai-proxy request` does, written with the
 * plain `nats` client only, so the wire contract is visible (docs/protocol.md).
 *
 * - subject `openai.requests.<id>`; the id is the last token (letters, digits, _ - : = + @ ~)
 * - `Nats-Msg-Id: <id>` makes a retried publish safe (the stream drops duplicates for 2 min)
 * - `Reply-To: <inbox>` is where the reply goes, besides `openai.results.<id>`
 * - `Content-Type: application/json`: the body is Chat Completions params, and the reply is
 *   the ChatCompletion JSON
 *
 * Run, with a proxy serving:
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/durable-request.ts "What is JetStream?"
 */
import { jetstream } from "@nats-io/jetstream";
import {
  connect,
  createInbox,
  errors,
  headers,
  nuid,
  RequestError,
  type MsgHdrs,
} from "@nats-io/transport-node";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";

const enc = new TextEncoder();

/**
 * Publishes with a PubAck, retrying timeouts and "no responders" (a stream leader election
 * or a server restart) with the same Nats-Msg-Id for up to 15 s: the stream's dedupe makes
 * the retries safe. A refusal with a reason (queue full, too large) is not retried.
 */
async function publishDurably(
  js: JetStreamClient,
  subject: string,
  data: Uint8Array,
  h: MsgHdrs,
): Promise<PubAck> {
  const deadline = Date.now() + 15_000;
  for (let wait = 100; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return await js.publish(subject, data, { headers: h });
    } catch (e) {
      // No PubAck in time, or no stream leader yet ("no responders"): retry, same Nats-Msg-Id.
      const retriable =
        e instanceof errors.TimeoutError ||
        (e instanceof Error && e.cause instanceof RequestError && e.cause.isNoResponders());
      if (!retriable || Date.now() + wait > deadline) throw e;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

const nc = await connect({ servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(",") });
try {
  const js = jetstream(nc);
  const id = nuid.next();
  const inbox = createInbox();
  // Subscribe before publishing, so the reply cannot arrive before anyone listens.
  const sub = nc.subscribe(inbox, { max: 1, timeout: 60_000 });

  const h = headers();
  h.set("Nats-Msg-Id", id);
  h.set("Reply-To", inbox);
  h.set("Content-Type", "application/json");
  // Optional: past this instant the API is not called; the request is answered with 408.
  h.set("Expires-At", new Date(Date.now() + 5 * 60_000).toISOString());
  const body = {
    // "model" is optional: the proxy's openai.engine is the default.
    messages: [{ role: "user", content: process.argv[2] ?? "What is JetStream?" }],
    temperature: 0.2,
  };
  const pa = await publishDurably(js, `openai.requests.${id}`, enc.encode(JSON.stringify(body)), h);
  console.log(`queued ${id} as ${pa.stream} #${pa.seq}${pa.duplicate ? " (duplicate)" : ""}`);

  for await (const m of sub) {
    const get = (k: string) => m.headers?.get(k) ?? "";
    if (get("Nats-Service-Error-Code") !== "") {
      console.log(`error ${get("Nats-Service-Error-Code")}: ${get("Nats-Service-Error")}`);
      process.exitCode = 1;
      break;
    }
    console.log(`Openai-Model:      ${get("Openai-Model")}`);
    console.log(`Openai-Request-Id: ${get("Openai-Request-Id")}`);
    console.log(`Openai-Usage:      ${get("Openai-Usage")}`);
    console.log(`Proxy-Attempts:    ${get("Proxy-Attempts")}`);
    const completion = m.json<{ choices: { message: { content: string | null } }[] }>();
    console.log(`assistant:         ${completion.choices[0]?.message.content ?? ""}`);
  }
} catch (e) {
  // The subscription's timeout: the request stays queued; its result will be stored at
  // openai.results.<id> (see fire-and-forget.ts).
  if (e instanceof errors.TimeoutError) console.error("no reply within 60 s");
  else throw e;
  process.exitCode = 1;
} finally {
  await nc.close();
}
