/**
 * Fire-and-forget: queue a request without a Reply-To, then read its result from the
 * results stream (`OPENAI_RESULTS`, one message per id at `openai.results.<id>`, kept 24 h).
 * This is what `nats-openai-proxy submit` + `result <id> --wait` do, with the plain `nats`
 * client only.
 *
 * Reading a result without missing it: subscribe to `openai.results.<id>` first (every
 * stored result is also an ordinary message on that subject), then ask the stream for the
 * last message on the subject with a direct get; if there is none yet, wait for the
 * subscription.
 *
 * Run, with a proxy serving:
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/fire-and-forget.ts "Summarise Hamlet in one line"
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/fire-and-forget.ts --id <id>   # read only
 */
import { jetstream } from "@nats-io/jetstream";
import {
  connect,
  errors,
  headers,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
} from "@nats-io/transport-node";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Result {
  headers: MsgHdrs | undefined;
  body: string;
}

/**
 * Direct get of the last message on `subject` in `stream` (any replica may answer). The
 * reply is the stored message itself, or an empty message with status 404 when there is none.
 */
async function directGetLast(
  nc: NatsConnection,
  stream: string,
  subject: string,
): Promise<Result | null> {
  const m: Msg = await nc.request(
    `$JS.API.DIRECT.GET.${stream}`,
    enc.encode(JSON.stringify({ last_by_subj: subject })),
    { timeout: 5000 },
  );
  if (m.headers?.code === 404) return null;
  if (m.headers?.hasError)
    throw new Error(`direct get: ${m.headers.code} ${m.headers.description}`);
  return { headers: m.headers, body: dec.decode(m.data) };
}

/** The stored result of `id`, waiting for it up to `timeoutMs`. */
async function waitForResult(nc: NatsConnection, id: string, timeoutMs: number): Promise<Result> {
  const subject = `openai.results.${id}`;
  const sub = nc.subscribe(subject, { max: 1, timeout: timeoutMs });
  try {
    const stored = await directGetLast(nc, "OPENAI_RESULTS", subject);
    if (stored) return stored;
    for await (const m of sub) return { headers: m.headers, body: dec.decode(m.data) };
    throw new Error(`no result for ${id}`);
  } finally {
    if (!sub.isClosed()) sub.unsubscribe();
  }
}

const nc = await connect({ servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(",") });
try {
  let id: string;
  if (process.argv[2] === "--id" && process.argv[3]) {
    id = process.argv[3];
  } else {
    id = nuid.next();
    const h = headers();
    h.set("Nats-Msg-Id", id);
    // A text body (no Content-Type): one user message to the default model; the result
    // body is the assistant's text.
    const pa = await jetstream(nc).publish(
      `openai.requests.${id}`,
      enc.encode(process.argv[2] ?? "Summarise Hamlet"),
      {
        headers: h,
      },
    );
    console.log(`submitted ${id} (${pa.stream} #${pa.seq})`);
  }

  const r = await waitForResult(nc, id, 60_000);
  const get = (k: string) => r.headers?.get(k) ?? "";
  if (get("Nats-Service-Error-Code") !== "") {
    console.log(`error ${get("Nats-Service-Error-Code")}: ${get("Nats-Service-Error")}`);
    process.exitCode = 1;
  } else {
    console.log(`model=${get("Openai-Model")} usage="${get("Openai-Usage")}"`);
    console.log(r.body);
  }
} catch (e) {
  if (e instanceof errors.TimeoutError) console.error("no result within 60 s");
  else throw e;
  process.exitCode = 1;
} finally {
  await nc.close();
}
