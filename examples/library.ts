/**
 * The typed client library of this package: `submit`, `request`, `stream` and `result`.
 *
 * An application that installed the package writes
 *   import { connectClient } from "nats-openai-proxy";
 * Inside this repository that import resolves only after `npm run build` (it points at
 * dist/), so this example imports the same code from the sources instead.
 *
 * Run, with a proxy serving:
 *   NATS_URL=nats://127.0.0.1:4222 npx tsx examples/library.ts
 */
import { ClientError, connectClient } from "../src/index.js";

const client = await connectClient({
  servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(","),
});
try {
  // Wait for the reply (durable: the request is in the work queue until it is answered).
  const r = await client.request("What is a work-queue stream?", { timeoutMs: 60_000 });
  console.log(`request: ok=${r.ok} model=${r.model} tokens=${r.usage?.total_tokens}`);
  console.log(`  ${r.body}`);

  // Fire and forget, then read the stored result.
  const s = await client.submit(
    { messages: [{ role: "user", content: "Name one NATS feature" }], temperature: 0 },
    { expiresAt: Date.now() + 10 * 60_000 },
  );
  console.log(`submit: ${s.id} duplicate=${s.duplicate}`);
  const stored = await client.result(s.id, { wait: true, timeoutMs: 60_000 });
  console.log(`result: ${stored?.completion?.choices?.[0]?.message?.content ?? stored?.error}`);

  // Stream: deltas as they arrive, then the final reply.
  const it = client.stream({ messages: [{ role: "user", content: "Count to five" }] });
  for (;;) {
    const n = await it.next();
    if (n.done) {
      console.log(`\nstream: ok=${n.value.ok} attempts=${n.value.attempts}`);
      break;
    }
    const c = n.value as { choices?: { delta?: { content?: string } }[] };
    process.stdout.write(c.choices?.[0]?.delta?.content ?? "");
  }

  // Errors come back as results with ok=false and the wire code.
  const bad = await client.request({
    model: "no-such-model",
    messages: [{ role: "user", content: "hi" }],
  });
  console.log(`error reply: ok=${bad.ok} code=${bad.code} ${bad.error}`);
} catch (e) {
  // Refused submissions (queue full, invalid id, …) and timeouts throw ClientError.
  if (e instanceof ClientError) console.error(`error ${e.code}: ${e.message}`);
  else throw e;
  process.exitCode = 1;
} finally {
  await client.close();
}
