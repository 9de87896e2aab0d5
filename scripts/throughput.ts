/**
 * Throughput through the proxy: a pre-loaded queue, one `serve` process, the local
 * OpenAI-compatible test double answering after a fixed latency. Prints requests per
 * second and Little's-law efficiency, throughput / (concurrency / latency).
 *
 *   make throughput                       # 200 ms latency, concurrency 64, 3000 requests
 *   make throughput ARGS="--latency 0 --requests 6000"
 */
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { startNatsServer, freePort } from "../test/helpers/nats-server.js";
import {
  applyStreams,
  makeStreamsDir,
  ROOT,
  serveEnv,
  spawnCli,
  testClient,
} from "../test/helpers/proxy.js";

const { values } = parseArgs({
  options: {
    latency: { type: "string", default: "200" },
    concurrency: { type: "string", default: "64" },
    requests: { type: "string", default: "3000" },
  },
});
const L = Number(values.latency);
const C = Number(values.concurrency);
const N = Number(values.requests);

const server = await startNatsServer();
const port = await freePort();
// The test double runs in its own process so that its CPU is not the proxy's.
const dev = spawn(
  process.execPath,
  ["--import", "tsx", "src/dev-openai/main.ts", "--port", String(port), "--latency", String(L)],
  { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
);
await new Promise<void>((resolve) => dev.stdout.once("data", () => resolve()));
const streams = makeStreamsDir();
const { client, nc } = await testClient(server.url);
await applyStreams(nc, streams.dir);
for (let i = 0; i < N; i += 256) {
  await Promise.all(
    Array.from({ length: Math.min(256, N - i) }, (_, k) =>
      client.submit(`throughput ${i + k}`, { id: `tp-${i + k}` }),
    ),
  );
}
let done = 0;
let t0 = 0;
let tLast = 0;
const finished = new Promise<void>((resolve) => {
  nc.subscribe("openai.results.>", {
    callback: () => {
      done++;
      tLast = Date.now();
      if (done === N) resolve();
    },
  });
});
const serve = spawnCli(
  ["serve"],
  serveEnv(server.url, `http://127.0.0.1:${port}/v1`, streams.dir, {
    PROXY_CONCURRENCY: String(C),
    LOG_LEVEL: "warn",
  }),
);
const startedAt = Date.now();
// Time from the first result, so the process start-up does not count.
await new Promise<void>((resolve) => {
  const t = setInterval(() => {
    if (done > 0) {
      t0 = Date.now();
      clearInterval(t);
      resolve();
    }
  }, 1);
});
const firstDone = done;
// Bounded: give up after 5 minutes (the timer must not keep the process alive after).
let giveUp: NodeJS.Timeout | undefined;
await Promise.race([finished, new Promise((r) => (giveUp = setTimeout(r, 300_000)))]);
clearTimeout(giveUp);
const rate = ((done - firstDone) / (tLast - t0)) * 1000;
const ideal = L > 0 ? (C / L) * 1000 : NaN;
process.stdout.write(
  `throughput: ${rate.toFixed(0)} req/s over ${done - firstDone} requests (latency ${L} ms, concurrency ${C}${L > 0 ? `; C/L = ${ideal.toFixed(0)} req/s, efficiency ${(rate / ideal).toFixed(3)}` : ""}; start-up ${t0 - startedAt} ms excluded)\n`,
);
await serve.kill("SIGTERM");
dev.kill("SIGTERM");
await nc.close();
await server.stop();
streams.cleanup();
