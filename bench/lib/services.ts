/**
 * The services a benchmark run talks to, each in its own process on loopback: the local
 * OpenAI-compatible test double (src/dev-openai, NOT OpenAI), and redis-server for the BullMQ
 * baseline. Also finds (or installs) the `ioredis` driver BullMQ 6 needs.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { freePort } from "../../test/helpers/nats-server.js";
import { registerTempDir, removeTempDir, ROOT, spawnChild, spawnTs, type Child } from "./procs.js";

// ---------------------------------------------------------------------------------------------
// dev-openai (the local test double)
// ---------------------------------------------------------------------------------------------

export interface DevOpenAIStatsView {
  calls: number;
  ok: number;
  inFlight: number;
  maxInFlight: number;
}

export interface DevOpenAIChild {
  child: Child;
  /** base URL including /v1 */
  url: string;
  setLatency(ms: number): Promise<void>;
  reset(): Promise<void>;
  stats(): Promise<DevOpenAIStatsView>;
  stop(): Promise<void>;
}

/** Starts `src/dev-openai/main.ts` in a child process (its CPU never counts for a worker). */
export async function startDevOpenAIChild(latencyMs = 0): Promise<DevOpenAIChild> {
  const child = spawnTs(
    "dev-openai",
    join(ROOT, "src/dev-openai/main.ts"),
    ["--port", "0", "--latency", String(latencyMs)],
    {},
  );
  const url = (await child.waitForLine(/^http:\/\//, 30_000)).trim();
  const root = url.replace(/\/v1\/?$/, "");
  const post = async (path: string, body: unknown): Promise<void> => {
    const r = await fetch(`${root}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`dev-openai ${path}: ${r.status} ${await r.text()}`);
    await r.arrayBuffer();
  };
  return {
    child,
    url,
    setLatency: (ms) => post("/_control/config", { latencyMs: ms }),
    reset: () => post("/_control/reset", {}),
    async stats() {
      const r = await fetch(`${root}/_control/stats`);
      return (await r.json()) as DevOpenAIStatsView;
    },
    stop: () => child.stop(),
  };
}

// ---------------------------------------------------------------------------------------------
// redis-server (BullMQ baseline)
// ---------------------------------------------------------------------------------------------

export const REDIS_SERVER_BIN =
  process.env.REDIS_SERVER_BIN ??
  (existsSync("/usr/bin/redis-server") ? "/usr/bin/redis-server" : "redis-server");

/** How the baseline's Redis persists: AOF, fsync once a second (see REDIS_PERSISTENCE_NOTE). */
export const REDIS_PERSISTENCE_ARGS = [
  "--save",
  "",
  "--appendonly",
  "yes",
  "--appendfsync",
  "everysec",
];
export const REDIS_PERSISTENCE_NOTE =
  "redis-server runs with appendonly yes, appendfsync everysec (AOF written on every command, " +
  "fsync once a second), no RDB snapshots; JetStream uses file storage, written on every " +
  "message and fsynced by nats-server 2.9 on its own 2-minute timer. Both are durable to a " +
  "process crash, neither to a power loss of the last second(s).";

export interface RedisChild {
  child: Child;
  port: number;
  stop(): Promise<void>;
}

/** True when a redis-server binary can be run. */
export function haveRedisServer(): boolean {
  try {
    execFileSync(REDIS_SERVER_BIN, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** `redis-server --version` → "7.0.15", or "?" */
export function redisVersion(): string {
  try {
    const s = execFileSync(REDIS_SERVER_BIN, ["--version"], { encoding: "utf8" });
    return /v=(\S+)/.exec(s)?.[1] ?? "?";
  } catch {
    return "?";
  }
}

/** A fresh redis-server (empty temp dir, free loopback port). */
export async function startRedis(): Promise<RedisChild> {
  const dir = mkdtempSync(join(tmpdir(), "bench-redis-"));
  registerTempDir(dir);
  const port = await freePort();
  const child = spawnChild(
    "redis-server",
    REDIS_SERVER_BIN,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--daemonize",
      "no",
      "--protected-mode",
      "no",
      ...REDIS_PERSISTENCE_ARGS,
    ],
    {},
  );
  try {
    await child.waitForLine(/Ready to accept connections/, 15_000);
  } catch (e) {
    await child.stop(1000);
    removeTempDir(dir);
    throw e;
  }
  return {
    child,
    port,
    async stop() {
      await child.stop(5000);
      removeTempDir(dir);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// ioredis (BullMQ 6 made it an optional peer dependency)
// ---------------------------------------------------------------------------------------------

/** The small part of an ioredis client the benchmark touches. */
export interface RedisClientLike {
  quit(): Promise<unknown>;
  disconnect(): void;
  on(event: string, fn: (...args: unknown[]) => void): unknown;
}

export type RedisCtor = new (opts: {
  host: string;
  port: number;
  maxRetriesPerRequest: null;
  enableOfflineQueue?: boolean;
}) => RedisClientLike;

const IOREDIS_SPEC = "ioredis@5";
const DEPS_DIR = join(ROOT, "bench/results/deps");

/**
 * Where `ioredis` can be imported from: $BENCH_IOREDIS, the project's node_modules, or a copy
 * installed once with npm into bench/results/deps (git-ignored). Returns a file URL or bare name.
 */
export function ensureIORedis(log: (s: string) => void): string {
  const fromEnv = process.env.BENCH_IOREDIS;
  if (fromEnv) return fromEnv.startsWith("file:") ? fromEnv : pathToFileURL(fromEnv).href;
  const local = join(ROOT, "node_modules/ioredis/built/index.js");
  if (existsSync(local)) return pathToFileURL(local).href;
  const cached = join(DEPS_DIR, "node_modules/ioredis/built/index.js");
  if (!existsSync(cached)) {
    log(
      `ioredis is not installed (bullmq 6 made it an optional peer); installing ${IOREDIS_SPEC} into ${DEPS_DIR} (not the project's package.json)`,
    );
    execFileSync(
      "npm",
      [
        "install",
        "--no-save",
        "--no-package-lock",
        "--no-audit",
        "--no-fund",
        "--prefix",
        DEPS_DIR,
        IOREDIS_SPEC,
      ],
      { stdio: ["ignore", "ignore", "inherit"], timeout: 180_000 },
    );
  }
  return pathToFileURL(cached).href;
}

/** Imports the ioredis constructor from what `ensureIORedis` returned. */
export async function importIORedis(spec: string): Promise<RedisCtor> {
  const mod = (await import(spec)) as { default?: unknown; Redis?: unknown };
  const ctor = (mod.Redis ?? mod.default) as RedisCtor | undefined;
  if (typeof ctor !== "function") throw new Error(`${spec} does not export the Redis client`);
  return ctor;
}

/** An ioredis client as BullMQ wants it (maxRetriesPerRequest: null). */
export function redisClient(Redis: RedisCtor, port: number): RedisClientLike {
  return new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: null });
}
