/**
 * What resumable streams and the response cache cost (issue 14, item 7):
 *
 * 1. Writing deltas: streamed tokens per second through one proxy at 50 concurrent
 *    streaming requests, with every delta also stored in OPENAI_STREAMS (the default)
 *    against the same proxy whose delta store does nothing (the baseline), alternating,
 *    in the same run.
 * 2. A cache hit against a direct call: the latency of a request answered from
 *    OPENAI_CACHE against the same request calling the API (the local test double, at
 *    0 ms and at 200 ms per call), one at a time.
 *
 *   node --import tsx bench/streams-cache.ts [--streams 50] [--requests 300] [--words 60]
 *                                            [--stream-delay ms] [--hits 200]
 *
 * Bounded: a fixed number of requests per run, and every wait has a timeout. The test
 * double is a LOCAL TEST DOUBLE of the OpenAI API in its own process (not OpenAI).
 */
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import type { PubAck } from "@nats-io/jetstream";
import { startNatsServer, freePort } from "../test/helpers/nats-server.js";
import {
  applyStreams,
  makeStreamsDir,
  ROOT,
  startTestProxy,
  testClient,
} from "../test/helpers/proxy.js";
import type { Proxy } from "../src/main.js";
import { chunkText } from "../src/protocol/stream.js";

const { values } = parseArgs({
  options: {
    streams: { type: "string", default: "50" },
    requests: { type: "string", default: "300" },
    words: { type: "string", default: "60" },
    hits: { type: "string", default: "200" },
    "stream-delay": { type: "string", default: "0" },
  },
});
const S = Number(values.streams);
const N = Number(values.requests);
const WORDS = Number(values.words);
const HITS = Number(values.hits);
/** ms between the test double's SSE chunks (0: as fast as the CPU allows) */
const CHUNK_MS = Number(values["stream-delay"]);

async function startDev(latencyMs: number): Promise<{ url: string; stop: () => void }> {
  const port = await freePort();
  const dev = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "src/dev-openai/main.ts",
      "--port",
      String(port),
      "--latency",
      String(latencyMs),
      "--stream-delay",
      String(CHUNK_MS),
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve) => dev.stdout.once("data", () => resolve()));
  return { url: `http://127.0.0.1:${port}/v1`, stop: () => dev.kill("SIGTERM") };
}

const server = await startNatsServer();
const streams = makeStreamsDir();
const { client, nc } = await testClient(server.url);
await applyStreams(nc, streams.dir);
let dev = await startDev(0);

/** Starts a proxy; `storeDeltas: false` gives it a delta store that stores nothing. */
function proxy(storeDeltas: boolean, devUrl: string): Promise<Proxy> {
  const none = () => Promise.resolve({} as PubAck);
  return startTestProxy({
    natsUrl: server.url,
    openaiUrl: devUrl,
    streamsDir: streams.dir,
    flags: { "worker.concurrency": S },
    ...(storeDeltas ? {} : { deps: { wrapStreamStore: () => none } }),
  });
}

const prompt = (i: number) =>
  `${i} ${Array.from({ length: WORDS - 1 }, (_, k) => `w${k}`).join(" ")}`;

/** N streaming requests, S at a time; tokens (deltas) received per second. */
async function streamRun(label: string, storeDeltas: boolean, round: number): Promise<number> {
  const p = await proxy(storeDeltas, dev.url);
  try {
    let next = 0;
    let deltas = 0;
    const t0 = performance.now();
    const one = async (i: number) => {
      const it = client.stream(
        { messages: [{ role: "user", content: `${label} ${round} ${prompt(i)}` }] },
        { timeoutMs: 60_000 },
      );
      for (;;) {
        const n = await it.next();
        if (n.done) {
          if (!n.value.ok) throw new Error(`stream ${i} failed: ${n.value.error ?? ""}`);
          return;
        }
        if (chunkText(n.value) !== "") deltas++;
      }
    };
    await Promise.all(
      Array.from({ length: S }, async () => {
        while (next < N) await one(next++);
      }),
    );
    return deltas / ((performance.now() - t0) / 1000);
  } finally {
    await p.stop(1000);
  }
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** One request at a time: `HITS` cache hits of one request, then `HITS` direct calls. */
async function cacheRun(latencyMs: number): Promise<{ hit: number[]; direct: number[] }> {
  dev.stop();
  dev = await startDev(latencyMs);
  const p = await proxy(true, dev.url);
  try {
    const input = { messages: [{ role: "user" as const, content: `cached at ${latencyMs} ms` }] };
    const first = await client.request(input, { cache: "10m", timeoutMs: 30_000 });
    if (!first.ok) throw new Error(`cache warm-up failed: ${first.error ?? ""}`);
    const time = async (f: () => Promise<unknown>) => {
      const t = performance.now();
      await f();
      return performance.now() - t;
    };
    const hit: number[] = [];
    const direct: number[] = [];
    const count = latencyMs > 0 ? Math.min(HITS, 50) : HITS;
    for (let i = 0; i < count; i++) {
      hit.push(await time(() => client.request(input, { cache: "10m", timeoutMs: 30_000 })));
      direct.push(
        await time(() =>
          client.request(
            { messages: [{ role: "user", content: `direct ${latencyMs} ${i}` }] },
            { timeoutMs: 30_000 },
          ),
        ),
      );
    }
    return { hit, direct };
  } finally {
    await p.stop(1000);
  }
}

try {
  process.stdout.write(
    `streams-cache bench: ${N} streaming requests of ${WORDS} words, ${S} at a time, one proxy, test double ${CHUNK_MS} ms between chunks; the same run alternates with and without OPENAI_STREAMS writes\n`,
  );
  // A first run warms the JIT and the server up; it is not counted.
  const warm = await streamRun("warm-up", true, -1);
  process.stdout.write(`  warm-up (not counted)  ${warm.toFixed(0)} tokens/s\n`);
  const rates: Record<"with" | "without", number[]> = { with: [], without: [] };
  for (let round = 0; round < 2; round++) {
    for (const mode of ["without", "with"] as const) {
      const r = await streamRun(mode, mode === "with", round);
      rates[mode].push(r);
      process.stdout.write(
        `  ${mode === "with" ? "with OPENAI_STREAMS   " : "without (no-op store)"}  ${r.toFixed(0)} tokens/s\n`,
      );
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  process.stdout.write(
    `  ratio with / without: ${(mean(rates.with) / mean(rates.without)).toFixed(3)} (means ${mean(rates.with).toFixed(0)} / ${mean(rates.without).toFixed(0)} tokens/s)\n`,
  );
  for (const latency of [0, 200]) {
    const { hit, direct } = await cacheRun(latency);
    process.stdout.write(
      `cache hit vs direct call, test double at ${latency} ms, ${hit.length} each, one at a time: hit p50 ${pct(hit, 0.5).toFixed(1)} ms p95 ${pct(hit, 0.95).toFixed(1)} ms; direct p50 ${pct(direct, 0.5).toFixed(1)} ms p95 ${pct(direct, 0.95).toFixed(1)} ms; ratio of p50s ${(pct(hit, 0.5) / pct(direct, 0.5)).toFixed(3)}\n`,
    );
  }
} finally {
  dev.stop();
  await nc.close();
  await server.stop();
  streams.cleanup();
}
