/**
 * Streaming: a JSON request with `"stream": true` and a Reply-To gets one message per
 * content delta on the Reply-To subject (header `Openai-Stream: delta`, body the
 * chat.completion.chunk JSON), then the final reply (`Openai-Stream: done`, body the whole
 * ChatCompletion, with the usual Openai-* headers). Only the final reply is stored in
 * OPENAI_RESULTS. Uses the plain `nats` client only.
 *
 * A retried upstream call starts over, so deltas may repeat: it opens with an
 * `Openai-Stream: restart` message (and a new chunk `id`), and this example then starts its
 * output again. `nats-openai-proxy request --resume <id>` reads the same answer from
 * OPENAI_STREAMS after a disconnect.
 *
 * Run, with a proxy serving:
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/streaming.ts "Stream this sentence back word by word"
 */
import { jetstream } from "@nats-io/jetstream";
import { connect, createInbox, errors, headers, nuid } from "@nats-io/transport-node";

interface Chunk {
  id: string;
  choices: { delta?: { content?: string | null } }[];
}

const enc = new TextEncoder();

const nc = await connect({ servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(",") });
try {
  const id = nuid.next();
  const inbox = createInbox();
  const sub = nc.subscribe(inbox, { timeout: 60_000 });

  const h = headers();
  h.set("Nats-Msg-Id", id);
  h.set("Reply-To", inbox);
  h.set("Content-Type", "application/json");
  const body = {
    messages: [{ role: "user", content: process.argv[2] ?? "Stream this back word by word" }],
    stream: true,
  };
  await jetstream(nc).publish(`openai.requests.${id}`, enc.encode(JSON.stringify(body)), {
    headers: h,
  });

  let attempt = "";
  let text = "";
  let deltas = 0;
  for await (const m of sub) {
    const get = (k: string) => m.headers?.get(k) ?? "";
    if (get("Openai-Stream") === "delta") {
      const chunk = m.json<Chunk>();
      if (attempt !== "" && chunk.id !== attempt) {
        process.stdout.write("\n[the proxy retried the call: starting over]\n");
        text = "";
      }
      attempt = chunk.id;
      const piece = chunk.choices[0]?.delta?.content ?? "";
      text += piece;
      deltas++;
      process.stdout.write(piece);
      continue;
    }
    if (get("Openai-Stream") === "restart") {
      // A redelivered attempt (a worker died mid-stream) starts the answer over.
      process.stdout.write(`\n[attempt ${get("Proxy-Attempts")} restarted: starting over]\n`);
      text = "";
      attempt = "";
      continue;
    }
    // Anything else is the final reply: a success (Openai-Stream: done) or an error.
    process.stdout.write("\n");
    if (get("Nats-Service-Error-Code") !== "") {
      console.log(`error ${get("Nats-Service-Error-Code")}: ${get("Nats-Service-Error")}`);
      process.exitCode = 1;
    } else {
      const final = m.json<{ choices: { message: { content: string | null } }[] }>();
      const same = final.choices[0]?.message.content === text;
      console.log(`[${get("Openai-Stream")}] ${deltas} deltas, usage "${get("Openai-Usage")}",`);
      console.log(`final text ${same ? "matches" : "differs from"} the deltas`);
    }
    break;
  }
} catch (e) {
  if (e instanceof errors.TimeoutError) console.error("no reply within 60 s");
  else throw e;
  process.exitCode = 1;
} finally {
  await nc.close();
}
