/**
 * Rate-limit benchmark (part of `make bench`): the local OpenAI-compatible server
 * enforces 600 requests per minute (sliding 60 s window, 429 + Retry-After beyond);
 * two proxy instances share a configured limit of 600 RPM. Over a bounded run
 * (default 2 minutes) it prints the sustained rate as a share of 600 RPM and the share
 * of calls answered 429. Targets: ≥ 95 % of 600 RPM, < 1 % 429s.
 *
 *   node --import tsx scripts/bench-ratelimit.ts [--seconds 120]
 */
import { parseArgs } from "node:util";
import { startNatsServer } from "../test/helpers/nats-server.js";
import { applyStreams, makeStreamsDir, startTestProxy, testClient } from "../test/helpers/proxy.js";
import { startDevOpenAI } from "../src/dev-openai/server.js";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "120" } } });
const seconds = Number(values.seconds);
const RPM = 600;

const server = await startNatsServer();
const dev = await startDevOpenAI({ rpm: RPM, latencyMs: 50 });
const streams = makeStreamsDir({ ackWaitMs: 30_000 });
const { client, nc } = await testClient(server.url);
await applyStreams(nc, streams.dir);

// A backlog larger than the limit allows in the run, so the limiter is the bottleneck.
const backlog = Math.ceil((RPM / 60) * seconds * 1.3);
for (let i = 0; i < backlog; i += 500) {
  await Promise.all(
    Array.from({ length: Math.min(500, backlog - i) }, (_, k) =>
      client.submit(`rl bench ${i + k}`, { id: `rlb-${i + k}` }),
    ),
  );
}
const proxies = await Promise.all(
  [0, 1].map(() =>
    startTestProxy({
      natsUrl: server.url,
      openaiUrl: dev.url,
      streamsDir: streams.dir,
      flags: {
        "limits.models": { "gpt-4o-mini": { rpm: RPM } },
        "worker.concurrency": 32,
        "openai.retry_max_ms": 60_000,
      },
    }),
  ),
);
const t0 = Date.now();
let completed = 0;
const sub = nc.subscribe("openai.results.>", {
  callback: (_e, m) => {
    if (Date.now() - t0 <= seconds * 1000 && !m.headers?.get("Nats-Service-Error-Code"))
      completed++;
  },
});
await new Promise((r) => setTimeout(r, seconds * 1000));
const s = dev.stats();
sub.unsubscribe();
await Promise.all(proxies.map((p) => p.stop(500)));
const achievedRpm = (completed / seconds) * 60;
// The test double answers nothing but 429 as a failure in this run.
const share429 = s.calls > 0 ? s.failed / s.calls : 0;
const rows = [
  ["run", `${seconds} s, 2 instances, limit ${RPM} RPM shared, server enforcing ${RPM} RPM`],
  ["completed in the window", String(completed)],
  [
    "sustained rate",
    `${achievedRpm.toFixed(1)} RPM = ${((achievedRpm / RPM) * 100).toFixed(1)} % of ${RPM} (target ≥ 95 %)`,
  ],
  ["upstream calls", String(s.calls)],
  ["answered 429", `${s.failed} = ${(share429 * 100).toFixed(2)} % (target < 1 %)`],
];
process.stdout.write(
  `\n| rate limits | value |\n|---|---|\n${rows.map(([k, v]) => `| ${k} | ${v} |`).join("\n")}\n`,
);
await nc.close();
await server.stop();
await dev.close();
streams.cleanup();
