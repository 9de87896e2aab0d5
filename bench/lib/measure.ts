/**
 * One measured run of one system (the proxy, the raw baseline, or BullMQ) against fresh
 * broker state: a new nats-server (or redis-server) per run, the queue pre-loaded before any
 * worker starts, workers in child processes, completions counted from the outside.
 *
 * Throughput and CPU come from the same window: from the `warm`-th completion to the
 * `warm + n`-th, so process start-up, JIT warm-up and the final drain are outside it.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Queue, QueueEvents } from "bullmq";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import OpenAI from "openai";
import { createClient } from "../../src/client/client.js";
import { applyDefinitions, loadDefinitions } from "../../src/nats/streams.js";
import { startNatsServer, type NatsServerHandle } from "../../test/helpers/nats-server.js";
import {
  codeFingerprint,
  cpuSeconds,
  LoadMeter,
  ROOT,
  spawnTs,
  vmBytes,
  type Child,
} from "./procs.js";
import {
  redisClient,
  startRedis,
  type DevOpenAIChild,
  type RedisClientLike,
  type RedisCtor,
} from "./services.js";

export type System = "proxy" | "raw" | "bullmq";
export const SYSTEMS: readonly System[] = ["proxy", "raw", "bullmq"];

export interface Env {
  dev: DevOpenAIChild;
  streamsDir: string;
  /** undefined when BullMQ cannot run here (no redis-server) */
  Redis: RedisCtor | undefined;
  ioredisSpec: string;
  log: (s: string) => void;
  /** extra environment for proxy processes (e.g. OPENAI_TRANSPORT=fetch) */
  proxyEnv?: Record<string, string>;
}

export interface ThroughputParams {
  latencyMs: number;
  /** concurrency of each worker process */
  concurrency: number;
  /** completions inside the measured window */
  n: number;
  /** completions before the window opens */
  warm: number;
  /** worker processes */
  instances: number;
  timeoutMs: number;
  /** extra node flags for the worker processes (profiling) */
  nodeArgs?: string[];
}

export interface ThroughputResult {
  /** completions per second inside the window */
  throughput: number;
  /** CPU seconds of all worker processes inside the window, per completion, in µs */
  workerCpuUs: number;
  /** CPU of the broker (nats-server / redis-server) per completion, in µs */
  brokerCpuUs: number;
  windowS: number;
  /** CLOCK_MONOTONIC µs when the window opened and closed (matches V8 profile timestamps) */
  windowFromUs: number;
  windowToUs: number;
  /** cores kept busy by processes not part of the benchmark during the window */
  foreignCores: number;
  timedOut: boolean;
}

const QUEUE = "bench";
const PROMPT = (i: number) => `benchmark request ${i}: say something short`;

/** Fingerprints of the proxy code at each proxy start (more than one: it changed mid-run). */
export const proxyCodeSeen = new Set<string>();

/** Starts one worker process of `system`. */
export function spawnWorker(
  system: System,
  e: Env,
  o: { natsUrl?: string; redisPort?: number; concurrency: number; nodeArgs?: string[] },
): Child {
  const common = { OPENAI_BASE_URL: e.dev.url, OPENAI_API_KEY: "x" };
  switch (system) {
    case "proxy":
      proxyCodeSeen.add(codeFingerprint());
      return spawnTs(
        "proxy",
        join(ROOT, "src/cli/main.ts"),
        ["serve"],
        {
          ...common,
          NATS_URL: o.natsUrl ?? "",
          PROXY_CONCURRENCY: String(o.concurrency),
          HTTP_PORT: "0",
          LOG_LEVEL: "warn",
          STREAMS_DIR: e.streamsDir,
          ...e.proxyEnv,
        },
        o.nodeArgs,
      );
    case "raw":
      return spawnTs(
        "raw-worker",
        join(ROOT, "bench/raw-worker.ts"),
        [],
        { ...common, NATS_URL: o.natsUrl ?? "", CONCURRENCY: String(o.concurrency) },
        o.nodeArgs,
      );
    case "bullmq":
      return spawnTs(
        "bullmq-worker",
        join(ROOT, "bench/bullmq-worker.ts"),
        [],
        {
          ...common,
          REDIS_PORT: String(o.redisPort ?? 6379),
          QUEUE,
          CONCURRENCY: String(o.concurrency),
          BENCH_IOREDIS: e.ioredisSpec,
        },
        o.nodeArgs,
      );
  }
}

/** Sum of CPU seconds of the given processes. */
function cpuOf(pids: (number | undefined)[]): number {
  return pids.reduce((s: number, p) => s + cpuSeconds(p), 0);
}

/**
 * Counts completions and snapshots time and CPU when the window opens and closes.
 * `tick()` is called once per completion.
 */
class WindowCounter {
  count = 0;
  private t0 = 0;
  private cpu0 = 0;
  private broker0 = 0;
  private mono0 = 0;
  private readonly load: LoadMeter;
  result: Omit<ThroughputResult, "timedOut"> | undefined;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  constructor(
    private readonly warm: number,
    private readonly n: number,
    private readonly workerPids: () => (number | undefined)[],
    private readonly brokerPid: number | undefined,
    otherPids: (number | undefined)[],
  ) {
    this.load = new LoadMeter(() => [...workerPids(), brokerPid, ...otherPids]);
  }

  tick(k = 1): void {
    const before = this.count;
    this.count += k;
    if (before < this.warm && this.count >= this.warm) {
      this.t0 = performance.now();
      this.mono0 = Number(process.hrtime.bigint() / 1000n);
      this.load.start();
      this.cpu0 = cpuOf(this.workerPids());
      this.broker0 = cpuSeconds(this.brokerPid);
    }
    if (before < this.warm + this.n && this.count >= this.warm + this.n) {
      const windowS = (performance.now() - this.t0) / 1000;
      const done = this.count - this.warm;
      this.result = {
        throughput: done / windowS,
        workerCpuUs: ((cpuOf(this.workerPids()) - this.cpu0) / done) * 1e6,
        brokerCpuUs: ((cpuSeconds(this.brokerPid) - this.broker0) / done) * 1e6,
        windowS,
        windowFromUs: this.mono0,
        windowToUs: Number(process.hrtime.bigint() / 1000n),
        foreignCores: this.load.foreignCores(),
      };
      this.resolveDone();
    }
  }
}

/** A worker that exits during a run ends it at once (with its output), not at the timeout. */
function exitedEarly(workers: Child[]): Promise<never> {
  return Promise.race(workers.map((w) => w.exited.then(() => w))).then((w) => {
    throw new Error(`${w.name} exited during the run:\n${w.output().slice(-1500)}`);
  });
}

async function waitForWindow(
  counter: WindowCounter,
  workers: Child[],
  timeoutMs: number,
): Promise<"done" | "timeout"> {
  let t: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((r) => (t = setTimeout(() => r("timeout"), timeoutMs)));
  const died = exitedEarly(workers);
  died.catch(() => undefined);
  try {
    return await Promise.race([counter.done.then(() => "done" as const), timedOut, died]);
  } finally {
    clearTimeout(t);
  }
}

// ---------------------------------------------------------------------------------------------
// NATS (proxy and raw baseline)
// ---------------------------------------------------------------------------------------------

interface NatsSetup {
  server: NatsServerHandle;
  nc: NatsConnection;
  close(): Promise<void>;
}

async function natsSetup(e: Env): Promise<NatsSetup> {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url, name: "bench-driver" });
  try {
    const jsm = await jetstreamManager(nc);
    await applyDefinitions(jsm, loadDefinitions(e.streamsDir));
  } catch (err) {
    await nc.close();
    await server.stop();
    throw err;
  }
  return {
    server,
    nc,
    async close() {
      await nc.close().catch(() => undefined);
      await server.stop();
    },
  };
}

/**
 * Publishes `count` text requests (each with a Reply-To nobody listens on) with up to 256
 * PubAcks outstanding (JETSTREAM_NOTES §9).
 */
async function preloadNats(nc: NatsConnection, count: number, offset = 0): Promise<void> {
  const client = await createClient(nc);
  const inflight = new Set<Promise<unknown>>();
  let failure: Error | undefined;
  for (let i = 0; i < count; i++) {
    const p = client
      .submit(PROMPT(offset + i), { id: `b${offset + i}`, replyTo: "bench.replies" })
      .catch((err: unknown) => (failure ??= err instanceof Error ? err : new Error(String(err))))
      .finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= 256) await Promise.race(inflight);
    if (failure !== undefined) break;
  }
  await Promise.all(inflight);
  if (failure !== undefined) throw failure;
}

async function runNatsThroughput(
  system: "proxy" | "raw",
  e: Env,
  p: ThroughputParams,
): Promise<ThroughputResult> {
  const s = await natsSetup(e);
  const workers: Child[] = [];
  try {
    await preloadNats(s.nc, p.warm + p.n);
    const counter = new WindowCounter(p.warm, p.n, () => workers.map((w) => w.pid), s.server.pid, [
      e.dev.child.pid,
    ]);
    const sub = s.nc.subscribe("openai.results.>", { callback: () => counter.tick() });
    await s.nc.flush();
    for (let i = 0; i < p.instances; i++) {
      workers.push(
        spawnWorker(system, e, {
          natsUrl: s.server.url,
          concurrency: p.concurrency,
          ...(p.nodeArgs ? { nodeArgs: p.nodeArgs } : {}),
        }),
      );
    }
    const outcome = await waitForWindow(counter, workers, p.timeoutMs);
    sub.unsubscribe();
    return finish(counter, outcome === "timeout", workers, p);
  } finally {
    await Promise.all(workers.map((w) => w.stop(10_000)));
    await s.close();
  }
}

function finish(
  counter: WindowCounter,
  timedOut: boolean,
  workers: Child[],
  p: ThroughputParams,
): ThroughputResult {
  if (counter.result) return { ...counter.result, timedOut };
  const tails = workers.map((w) => `--- ${w.name} ---\n${w.output().slice(-1500)}`).join("\n");
  throw new Error(
    `no result: ${counter.count} of ${p.warm + p.n} completions within ${p.timeoutMs} ms\n${tails}`,
  );
}

// ---------------------------------------------------------------------------------------------
// BullMQ
// ---------------------------------------------------------------------------------------------

interface BullSetup {
  port: number;
  brokerPid: number | undefined;
  queue: Queue;
  conn: RedisClientLike;
  close(): Promise<void>;
}

async function bullSetup(e: Env): Promise<BullSetup> {
  if (!e.Redis) throw new Error("BullMQ baseline unavailable (no redis-server)");
  const redis = await startRedis();
  const conn = redisClient(e.Redis, redis.port);
  const queue = new Queue(QUEUE, { connection: conn });
  return {
    port: redis.port,
    brokerPid: redis.child.pid,
    queue,
    conn,
    async close() {
      await queue.close().catch(() => undefined);
      await conn.quit().catch(() => undefined);
      await redis.stop();
    },
  };
}

async function preloadBull(queue: Queue, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(count, i + 1000); j++) {
      jobs.push({ name: "chat", data: { prompt: PROMPT(j) } });
    }
    await queue.addBulk(jobs);
  }
}

async function runBullThroughput(e: Env, p: ThroughputParams): Promise<ThroughputResult> {
  const s = await bullSetup(e);
  const workers: Child[] = [];
  const eventsConn = redisClient(e.Redis!, s.port);
  const events = new QueueEvents(QUEUE, { connection: eventsConn });
  let poll: NodeJS.Timeout | undefined;
  try {
    await preloadBull(s.queue, p.warm + p.n);
    await events.waitUntilReady();
    const counter = new WindowCounter(p.warm, p.n, () => workers.map((w) => w.pid), s.brokerPid, [
      e.dev.child.pid,
    ]);
    events.on("completed", () => counter.tick());
    // Safety net: the events stream is capped (~10,000 entries); should the reader ever fall
    // that far behind, the completed count from Redis still ends the run.
    poll = setInterval(() => {
      void s.queue.getCompletedCount().then(
        (c) => {
          if (c > counter.count + 1000) counter.tick(c - counter.count);
        },
        () => undefined,
      );
    }, 500);
    for (let i = 0; i < p.instances; i++) {
      workers.push(
        spawnWorker("bullmq", e, {
          redisPort: s.port,
          concurrency: p.concurrency,
          ...(p.nodeArgs ? { nodeArgs: p.nodeArgs } : {}),
        }),
      );
    }
    const outcome = await waitForWindow(counter, workers, p.timeoutMs);
    return finish(counter, outcome === "timeout", workers, p);
  } finally {
    clearInterval(poll);
    await Promise.all(workers.map((w) => w.stop(10_000)));
    await events.close().catch(() => undefined);
    await eventsConn.quit().catch(() => undefined);
    await s.close();
  }
}

/** One throughput run of `system`. */
export async function runThroughput(
  system: System,
  e: Env,
  p: ThroughputParams,
): Promise<ThroughputResult> {
  await e.dev.setLatency(p.latencyMs);
  await e.dev.reset();
  return system === "bullmq" ? runBullThroughput(e, p) : runNatsThroughput(system, e, p);
}

// ---------------------------------------------------------------------------------------------
// (d) added latency at low load
// ---------------------------------------------------------------------------------------------

export interface LatencyResult {
  /** through the system, ms */
  p50: number;
  p99: number;
  /** direct SDK calls to the same test double, interleaved with the above, ms */
  directP50: number;
  directP99: number;
  foreignCores: number;
}

export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

/**
 * `count` sequential requests through `system` at zero upstream latency, each paired with a
 * direct SDK call (alternating, so drift affects both series alike).
 */
export async function runLatency(
  system: System,
  e: Env,
  count: number,
  warmup: number,
): Promise<LatencyResult> {
  await e.dev.setLatency(0);
  await e.dev.reset();
  const sdk = new OpenAI({ apiKey: "x", baseURL: e.dev.url });
  const direct = async (i: number): Promise<void> => {
    await sdk.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: PROMPT(i) }],
    });
  };
  let via: (i: number) => Promise<void>;
  let cleanup: () => Promise<void>;
  let worker: Child;
  if (system === "bullmq") {
    const s = await bullSetup(e);
    const eventsConn = redisClient(e.Redis!, s.port);
    const events = new QueueEvents(QUEUE, {
      connection: eventsConn,
    });
    await events.waitUntilReady();
    worker = spawnWorker("bullmq", e, { redisPort: s.port, concurrency: 64 });
    via = async (i) => {
      const job = await s.queue.add("chat", { prompt: PROMPT(i) });
      await job.waitUntilFinished(events, 60_000);
    };
    cleanup = async () => {
      await worker.stop(10_000);
      await events.close().catch(() => undefined);
      await eventsConn.quit().catch(() => undefined);
      await s.close();
    };
  } else {
    const s = await natsSetup(e);
    worker = spawnWorker(system, e, { natsUrl: s.server.url, concurrency: 64 });
    const client = await createClient(s.nc);
    via = async (i) => {
      const r = await client.request(PROMPT(i), { id: `l${i}`, timeoutMs: 60_000 });
      if (system === "proxy" && !r.ok) throw new Error(`request failed: ${r.error ?? "?"}`);
    };
    cleanup = async () => {
      await worker.stop(10_000);
      await s.close();
    };
  }
  const load = new LoadMeter(() => [worker.pid, e.dev.child.pid]);
  load.start();
  const died = exitedEarly([worker]);
  died.catch(() => undefined);
  try {
    const viaMs: number[] = [];
    const directMs: number[] = [];
    for (let i = 0; i < warmup + count; i++) {
      let t = performance.now();
      await direct(i);
      const d = performance.now() - t;
      t = performance.now();
      await Promise.race([via(i), died]);
      const v = performance.now() - t;
      if (i === warmup - 1) load.start();
      if (i >= warmup) {
        directMs.push(d);
        viaMs.push(v);
      }
    }
    viaMs.sort((a, b) => a - b);
    directMs.sort((a, b) => a - b);
    return {
      p50: percentile(viaMs, 0.5),
      p99: percentile(viaMs, 0.99),
      directP50: percentile(directMs, 0.5),
      directP99: percentile(directMs, 0.99),
      foreignCores: load.foreignCores(),
    };
  } catch (err) {
    throw new Error(`${String(err)}\n--- ${worker.name} ---\n${worker.output().slice(-1500)}`);
  } finally {
    await cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// (e) peak RSS with a deep backlog
// ---------------------------------------------------------------------------------------------

export interface RssResult {
  /** VmHWM of the worker process, bytes */
  peakRss: number;
  /** the most calls the test double saw in flight at once */
  maxInFlight: number;
  completed: number;
  queued: number;
  foreignCores: number;
}

/**
 * Pre-loads `queued` requests, runs one worker with `concurrency` slots against an upstream
 * latency of `latencyMs` for `durationMs`, and reads its peak RSS. NATS systems only.
 */
export async function runRss(
  system: "proxy" | "raw",
  e: Env,
  o: {
    queued: number;
    concurrency: number;
    latencyMs: number;
    durationMs: number;
    nodeArgs?: string[];
  },
): Promise<RssResult> {
  await e.dev.setLatency(o.latencyMs);
  await e.dev.reset();
  const s = await natsSetup(e);
  let worker: Child | undefined;
  try {
    await preloadNats(s.nc, o.queued);
    let completed = 0;
    const sub = s.nc.subscribe("openai.results.>", {
      callback: () => {
        completed++;
      },
    });
    await s.nc.flush();
    worker = spawnWorker(system, e, {
      natsUrl: s.server.url,
      concurrency: o.concurrency,
      ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}),
    });
    const w = worker;
    const load = new LoadMeter(() => [w.pid, s.server.pid, e.dev.child.pid]);
    load.start();
    await new Promise((r) => setTimeout(r, o.durationMs));
    const foreignCores = load.foreignCores();
    if (w.proc.exitCode !== null || w.proc.signalCode !== null) {
      throw new Error(`${w.name} exited during the run:\n${w.output().slice(-1500)}`);
    }
    const peakRss = vmBytes(worker.pid, "VmHWM");
    const st = await e.dev.stats();
    sub.unsubscribe();
    return { peakRss, maxInFlight: st.maxInFlight, completed, queued: o.queued, foreignCores };
  } finally {
    await worker?.stop(5000);
    await s.close();
  }
}

/** A fresh temp dir for CPU profiles. */
export function profileDir(): string {
  return mkdtempSync(join(tmpdir(), "bench-prof-"));
}
