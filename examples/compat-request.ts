/**
 * Compat request-reply: what the original tool's clients do, i.e.
 * `nats request openai_requests "List the last 10 presidents"`, with the plain `nats` client.
 * Text in, the assistant's text out. The proxy writes the request into the work-queue
 * stream first, so a worker crash means a late answer, not a lost one.
 *
 * It then sends a second request with the same Nats-Msg-Id to show an error answer: errors
 * carry the NATS micro service headers Nats-Service-Error and Nats-Service-Error-Code.
 *
 * Run, with a proxy serving (`make run`, or `nats-openai-proxy serve`):
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/compat-request.ts "List the last 10 presidents"
 *
 * Uses only the `nats` npm package.
 */
import { connect, headers, nuid, RequestError, type Msg } from "@nats-io/transport-node";

const SUBJECT = "openai_requests";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** The reply text, or "error <code>: <message>" when the proxy answered with an error. */
function show(m: Msg): string {
  const code = m.headers?.get("Nats-Service-Error-Code") ?? "";
  if (code !== "") return `error ${code}: ${m.headers?.get("Nats-Service-Error") ?? ""}`;
  return dec.decode(m.data);
}

const nc = await connect({ servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(",") });
try {
  const prompt = process.argv[2] ?? "List the last 10 presidents";

  // 1. Exactly what the original tool's clients send: a text body, no headers.
  const r1 = await nc.request(SUBJECT, enc.encode(prompt), { timeout: 60_000 });
  console.log(`reply: ${show(r1)}`);

  // 2. Optional: choose the request id with Nats-Msg-Id (letters, digits and _ - : = + @ ~).
  //    A second request with the same id inside the 2-minute duplicate window is refused at
  //    once with 409, and the first caller keeps the reply.
  const id = `compat-example-${nuid.next()}`;
  const h = headers();
  h.set("Nats-Msg-Id", id);
  const first = await nc.request(SUBJECT, enc.encode("Say hello"), { timeout: 60_000, headers: h });
  console.log(`first  ${id}: ${show(first)}`);
  const again = await nc.request(SUBJECT, enc.encode("Say hello"), { timeout: 60_000, headers: h });
  console.log(`again  ${id}: ${show(again)}`);
} catch (e) {
  // No proxy subscribed to the compat subject: nats.js fails at once with "no responders".
  if (e instanceof RequestError && e.isNoResponders())
    console.error(`no proxy is serving ${SUBJECT}`);
  else throw e;
  process.exitCode = 1;
} finally {
  await nc.close();
}
