/**
 * `make soak` (not in CI): a bounded run mixing load, injected API faults, proxy kills
 * and a nats-server restart, ending with a table. Everything on loopback.
 *
 *   make soak                 # 3 minutes
 *   make soak ARGS="--minutes 1 --rate 40"
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { parseArgs } from "node:util";
import type { NatsConnection } from "@nats-io/transport-node";
import { startNatsServer } from "../test/helpers/nats-server.js";
import {
  applyStreams,
  makeStreamsDir,
  serveEnv,
  spawnCli,
  testClient,
  type ServeProcess,
} from "../test/helpers/proxy.js";
import { startDevOpenAI } from "../src/dev-openai/server.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "3" },
    rate: { type: "string", default: "40" },
    instances: { type: "string", default: "2" },
  },
});
const minutes = Number(values.minutes);
const rate = Number(values.rate);
const instances = Number(values.instances);
const durationMs = minutes * 60_000;

const log = (s: string) =>
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

const server = await startNatsServer();
const dev = await startDevOpenAI({ latencyMs: 50 });
const streams = makeStreamsDir({ ackWaitMs: 5000, maxDeliver: 5 });
const { client, nc } = await testClient(server.url);
await applyStreams(nc, streams.dir);
const env = serveEnv(server.url, dev.url, streams.dir, {
  LOG_LEVEL: "info",
  PROXY_CONCURRENCY: "32",
});
const procs: ServeProcess[] = [];
const startServe = async () => {
  const p = spawnCli(["serve"], env);
  await p.waitFor(/worker started/, 30_000);
  return p;
};
for (let i = 0; i < instances; i++) procs.push(await startServe());

const accepted = new Set<string>();
const expectOk = new Set<string>();
let sent = 0;
let refused = 0;
let kills = 0;
let serverRestarts = 0;
let faultBursts = 0;
const t0 = Date.now();
let stopping = false;

// Load: a steady rate, with a few requests that fail transiently (recover) or permanently (DLQ).
const load = (async () => {
  let n = 0;
  while (!stopping && Date.now() - t0 < durationMs) {
    const due = Math.floor(((Date.now() - t0) / 1000) * rate);
    const batch: Promise<void>[] = [];
    for (; n < due; n++) {
      const id = `soak-${n}`;
      const kind = n % 100 === 7 ? "permanent" : n % 50 === 3 ? "transient" : "ok";
      const prompt =
        kind === "permanent"
          ? `soak ${n} [[status:400]]`
          : kind === "transient"
            ? `soak ${n} [[status:500x2]]`
            : `soak ${n}`;
      sent++;
      batch.push(
        client.submit(prompt, { id, retryForMs: 30_000 }).then(
          () => {
            accepted.add(id);
            if (kind !== "permanent") expectOk.add(id);
          },
          () => {
            refused++;
          },
        ),
      );
    }
    await Promise.all(batch);
    await new Promise((r) => setTimeout(r, 50));
  }
})();

// Chaos: kill -9 a proxy every 20 s, a burst of 503s every 30 s, one nats-server restart midway.
const chaos = (async () => {
  let restarted = false;
  let lastKill = Date.now();
  let lastBurst = Date.now();
  while (!stopping && Date.now() - t0 < durationMs) {
    await new Promise((r) => setTimeout(r, 500));
    if (Date.now() - lastKill > 20_000) {
      const i = kills % procs.length;
      await procs[i]!.kill("SIGKILL");
      kills++;
      log(`killed proxy ${i} (kill ${kills})`);
      procs[i] = await startServe();
      lastKill = Date.now();
    }
    if (Date.now() - lastBurst > 30_000) {
      dev.injectFaults(...Array.from({ length: 20 }, () => ({ status: 503 })));
      faultBursts++;
      lastBurst = Date.now();
    }
    if (!restarted && Date.now() - t0 > durationMs / 2) {
      await server.kill();
      await server.restart();
      restarted = true;
      serverRestarts++;
      log("nats-server killed and restarted");
    }
  }
})();

await Promise.all([load, chaos]);
stopping = true;
log(`load done: ${sent} sent; waiting for results`);

async function settle(conn: NatsConnection): Promise<void> {
  const deadline = Date.now() + 120_000;
  const jsm = await jetstreamManager(conn);
  while (Date.now() < deadline) {
    try {
      const q = await jsm.streams.info("OPENAI_REQUESTS");
      const c = await jsm.consumers.info("OPENAI_REQUESTS", "openai-proxy");
      if (q.state.messages === 0 && c.num_pending === 0 && c.num_ack_pending === 0) return;
    } catch {
      // server briefly away
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
await settle(nc);

let completed = 0;
let failed = 0;
let lost = 0;
let unexpectedErrors = 0;
for (const id of accepted) {
  const r = await client.result(id);
  if (!r) lost++;
  else if (r.ok) completed++;
  else {
    failed++;
    if (expectOk.has(id)) unexpectedErrors++;
  }
}
const jsm = await jetstreamManager(nc);
const dlq = (await jsm.streams.info("OPENAI_DLQ")).state.messages;
const stats = dev.stats();
// Processed twice = the API answered the same request successfully more than once (a
// proxy killed between the API's answer and the result's PubAck, or NATS down then).
const duplicates = Object.entries(stats.okByPrompt).filter(
  ([p, n]) => p.startsWith("soak ") && n > 1,
).length;

const rows: [string, string | number][] = [
  ["duration", `${minutes} min at ${rate} req/s, ${instances} proxies`],
  ["requests sent", sent],
  ["accepted", accepted.size],
  ["refused at submit", refused],
  ["completed ok", completed],
  ["answered with an error", `${failed} (${unexpectedErrors} of them not injected)`],
  ["dead-lettered (DLQ)", dlq],
  ["duplicates (answered twice by the API)", duplicates],
  ["lost (accepted, no result)", lost],
  ["upstream calls", stats.calls],
  ["proxy kills (SIGKILL)", kills],
  ["nats-server restarts (SIGKILL)", serverRestarts],
  ["503 fault bursts (20 calls each)", faultBursts],
];
process.stdout.write(
  `\n| soak | value |\n|---|---|\n${rows.map(([k, v]) => `| ${k} | ${v} |`).join("\n")}\n`,
);

for (const p of procs) await p.kill("SIGTERM");
await nc.close();
await server.stop();
await dev.close();
streams.cleanup();
process.exitCode = lost === 0 ? 0 : 1;
