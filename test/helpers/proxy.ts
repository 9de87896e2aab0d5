/**
 * Test helpers around the proxy: a configuration built from flags (no file, no
 * environment), streams definitions with test-sized timings, an in-process proxy,
 * and a `serve` subprocess that can be killed with SIGKILL.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { spawn, type ChildProcess } from "node:child_process";
import {
  appendFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { loadConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import { createLogger, type Logger } from "../../src/log.js";
import { startProxy, type Proxy, type ProxyDeps } from "../../src/main.js";
import { createClient, type ProxyClient } from "../../src/client/client.js";
import { applyDefinitions } from "../../src/nats/streams.js";
import { definitionsFor } from "../../src/nats/definitions.js";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export interface StreamsTweaks {
  ackWaitMs?: number;
  maxDeliver?: number;
  maxAckPending?: number;
  maxMsgs?: number;
  maxBytes?: number;
  maxMsgSize?: number;
  replicas?: number;
}

/** A temporary copy of streams/ with test-sized settings. */
export function makeStreamsDir(t: StreamsTweaks = {}): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "proxy-streams-"));
  const src = join(ROOT, "streams");
  for (const f of readdirSync(src)) {
    const obj = JSON.parse(readFileSync(join(src, f), "utf8")) as Record<string, unknown>;
    if (obj.config && typeof obj.config === "object") {
      const c = obj.config as Record<string, unknown>;
      if (t.ackWaitMs !== undefined) c.ack_wait = t.ackWaitMs * 1e6;
      if (t.maxDeliver !== undefined) c.max_deliver = t.maxDeliver;
      if (t.maxAckPending !== undefined) c.max_ack_pending = t.maxAckPending;
    } else if (obj.name === "OPENAI_REQUESTS") {
      if (t.maxMsgs !== undefined) obj.max_msgs = t.maxMsgs;
      if (t.maxBytes !== undefined) obj.max_bytes = t.maxBytes;
      if (t.maxMsgSize !== undefined) obj.max_msg_size = t.maxMsgSize;
    }
    if (t.replicas !== undefined && obj.name) obj.num_replicas = t.replicas;
    writeFileSync(join(dir, f), JSON.stringify(obj, null, 2));
  }
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A configuration from flags only: defaults, no config file, no environment. */
export function testConfig(flags: Record<string, unknown>): Config {
  return loadConfig({
    defaultFile: join(ROOT, "no-such-config.yaml"),
    env: {},
    flags: { "http.enabled": false, "log.level": "silent", ...flags },
  }).config;
}

/** A logger that keeps its lines in memory (for assertions) instead of printing. */
export function memoryLogger(level = "debug"): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({
    level,
    pretty: false,
    destination: { write: (s: string) => void lines.push(s) },
  });
  return { log, lines };
}

export interface TestProxyOptions {
  natsUrl: string;
  openaiUrl: string;
  streamsDir: string;
  flags?: Record<string, unknown>;
  deps?: ProxyDeps;
  log?: Logger;
}

/** Starts a proxy in this process. */
export async function startTestProxy(o: TestProxyOptions): Promise<Proxy> {
  const config = testConfig({
    "nats.server": o.natsUrl,
    "openai.base_url": o.openaiUrl,
    "openai.api_key": "sk-test-0000000000000000000000",
    "streams.dir": o.streamsDir,
    "openai.retry_min_ms": 20,
    "openai.retry_max_ms": 2000,
    "worker.nak_delay_ms": 100,
    "worker.nak_delay_max_ms": 1000,
    "worker.shutdown_grace_ms": 2000,
    "worker.pull_expires_ms": 1000,
    ...o.flags,
  });
  // TEST_LOG=debug TEST_LOG_FILE=/tmp/x.log keeps the proxy's logs while debugging a test.
  const file = process.env.TEST_LOG_FILE ?? "/dev/stderr";
  const log =
    o.log ??
    createLogger({
      level: process.env.TEST_LOG ?? "silent",
      pretty: false,
      destination: { write: (s: string) => appendFileSync(file, s) },
    });
  return startProxy(config, log, o.deps ?? {});
}

/** A client on its own connection. */
export async function testClient(
  natsUrl: string,
): Promise<{ client: ProxyClient; nc: NatsConnection }> {
  const nc = await connect({ servers: natsUrl });
  return { client: await createClient(nc), nc };
}

export interface ServeProcess {
  proc: ChildProcess;
  /** stdout and stderr interleaved */
  output(): string;
  stdout(): string;
  stderr(): string;
  /** resolves when a line matching `re` was printed */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

const children = new Set<ChildProcess>();
// A test or script that dies early must not leave `serve` processes behind.
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Runs the CLI (`node --import tsx src/cli/main.ts <args>`) as a subprocess. */
export function spawnCli(args: string[], env: Record<string, string> = {}): ServeProcess {
  const proc = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "src/cli/main.ts"), ...args],
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  let stdout = "";
  let stderr = "";
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const onData = (b: Buffer) => {
    out += b.toString();
    for (const w of [...waiters]) {
      if (w.re.test(out)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  proc.stdout.on("data", (b: Buffer) => {
    stdout += b.toString();
    onData(b);
  });
  proc.stderr.on("data", (b: Buffer) => {
    stderr += b.toString();
    onData(b);
  });
  children.add(proc);
  const exited = new Promise<number | null>((resolve) =>
    proc.on("close", (code) => {
      children.delete(proc);
      resolve(code);
    }),
  );
  return {
    proc,
    output: () => out,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitFor(re, timeoutMs = 20_000) {
      if (re.test(out)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(
          () =>
            reject(new Error(`timed out waiting for ${String(re)}; output:\n${out.slice(-3000)}`)),
          timeoutMs,
        );
        const w = {
          re,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        };
        waiters.push(w);
        void exited.then(() => {
          if (waiters.includes(w)) {
            clearTimeout(t);
            reject(new Error(`process exited before ${String(re)}; output:\n${out.slice(-3000)}`));
          }
        });
      });
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Environment for a `serve` subprocess against the given servers. */
export function serveEnv(
  natsUrl: string,
  openaiUrl: string,
  streamsDir: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    NATS_URL: natsUrl,
    OPENAI_BASE_URL: openaiUrl,
    OPENAI_API_KEY: "sk-test-0000000000000000000000",
    HTTP_PORT: "0",
    LOG_LEVEL: "info",
    ...extra,
    STREAMS_DIR: streamsDir,
  };
}

/** Polls `check` until it returns true (bounded). For states with no event to await. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** Creates the streams and the lane consumers from a definitions directory (and tenants). */
export async function applyStreams(
  nc: NatsConnection,
  dir: string,
  flags: Record<string, unknown> = {},
): Promise<void> {
  const config = testConfig({ "streams.dir": dir, ...flags });
  await applyDefinitions(await jetstreamManager(nc), definitionsFor(config).defs);
}
