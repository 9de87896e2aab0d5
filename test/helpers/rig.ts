/**
 * The set-up most integration files share: one nats-server and one local OpenAI test
 * double for the whole file, a client on its own connection, a temporary streams
 * directory, and proxies started per test and stopped after it.
 *
 * `useRig(opts)` registers the vitest hooks and returns getters that are valid inside
 * tests and later hooks (not at module load). Hook order: vitest runs "after" hooks in
 * reverse order of registration, so a file's own afterEach/afterAll registered after
 * `useRig` runs before the rig's (its proxies are still running, the connection open).
 * Work that must come after the rig's reset goes into `opts.afterEach`.
 *
 * After each test the rig stops the test's proxies (grace 500 ms), resets the test double
 * (`reset()`, then `opts.devReset`; not with `resetDev: false`), purges `opts.purge`
 * (errors ignored), then runs `opts.afterEach`. After all tests it closes the connection,
 * stops both servers and removes the streams directory.
 */
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll } from "vitest";
import type { ProxyClient } from "../../src/client/client.js";
import { DeadLetters } from "../../src/client/dlq.js";
import {
  startDevOpenAI,
  type DevOpenAI,
  type DevOpenAIOptions,
} from "../../src/dev-openai/server.js";
import type { Proxy, ProxyDeps } from "../../src/main.js";
import { startNatsServer, type NatsServerHandle, type NatsServerOptions } from "./nats-server.js";
import {
  applyStreams,
  makeStreamsDir,
  startTestProxy,
  testClient,
  type StreamsTweaks,
  type TestProxyOptions,
} from "./proxy.js";

export interface RigOptions {
  /** Test-sized settings of the streams directory (see makeStreamsDir). */
  streams?: StreamsTweaks;
  /** Options of the nats-server. */
  server?: NatsServerOptions;
  /** Options of the test double. */
  dev?: DevOpenAIOptions;
  /** Create the streams and lane consumers in beforeAll, before any proxy runs. */
  applyStreams?: boolean;
  /** Flags every `proxy()` starts with (its own flags win). Not used by `startProxy()`. */
  flags?: Record<string, unknown>;
  /** Reset the test double after each test (default true); false: its state carries over. */
  resetDev?: boolean;
  /** After each test, after dev.reset(): more resets of the test double (setLatency(0)...). */
  devReset?: (dev: DevOpenAI) => void;
  /** Streams purged after each test (errors ignored). */
  purge?: string[];
  /** Runs last after each test: proxies stopped, test double reset, streams purged. */
  afterEach?: (rig: Rig) => void | Promise<unknown>;
}

export interface Rig {
  readonly server: NatsServerHandle;
  readonly dev: DevOpenAI;
  /** The client's connection. */
  readonly nc: NatsConnection;
  readonly client: ProxyClient;
  readonly jsm: JetStreamManager;
  /** Dead letters of the default stream names, on the client's connection. */
  readonly dlq: DeadLetters;
  /** The temporary streams directory. */
  readonly streamsDir: string;
  /** Starts a proxy with the rig's flags and `flags`; it is stopped after the test. */
  proxy(flags?: Record<string, unknown>, deps?: ProxyDeps): Promise<Proxy>;
  /** Stops the proxies `proxy()` started so far, now. */
  stopProxies(graceMs: number): Promise<void>;
  /** startTestProxy against the rig's servers and streams; the caller stops it. */
  startProxy(o?: Partial<TestProxyOptions>): Promise<Proxy>;
}

export function useRig(opts: RigOptions = {}): Rig {
  let server: NatsServerHandle | undefined;
  let dev: DevOpenAI | undefined;
  let nc: NatsConnection | undefined;
  let client: ProxyClient | undefined;
  let jsm: JetStreamManager | undefined;
  let dlq: DeadLetters | undefined;
  const streams = makeStreamsDir(opts.streams);
  const proxies: Proxy[] = [];

  const ready = <T>(v: T | undefined, what: string): T => {
    if (v === undefined)
      throw new Error(`rig: ${what} is not started yet (use it in a test or hook)`);
    return v;
  };

  const rig: Rig = {
    get server() {
      return ready(server, "server");
    },
    get dev() {
      return ready(dev, "dev");
    },
    get nc() {
      return ready(nc, "nc");
    },
    get client() {
      return ready(client, "client");
    },
    get jsm() {
      return ready(jsm, "jsm");
    },
    get dlq() {
      dlq ??= new DeadLetters(rig.nc, rig.jsm, {
        dlqStream: "OPENAI_DLQ",
        dlqPrefix: "openai.dlq",
        requestsPrefix: "openai.requests",
      });
      return dlq;
    },
    streamsDir: streams.dir,
    async proxy(flags = {}, deps = {}) {
      const p = await rig.startProxy({ flags: { ...opts.flags, ...flags }, deps });
      proxies.push(p);
      return p;
    },
    async stopProxies(graceMs) {
      await Promise.all(proxies.splice(0).map((p) => p.stop(graceMs)));
    },
    startProxy(o = {}) {
      return startTestProxy({
        natsUrl: rig.server.url,
        openaiUrl: rig.dev.url,
        streamsDir: streams.dir,
        ...o,
      });
    },
  };

  beforeAll(async () => {
    [server, dev] = await Promise.all([startNatsServer(opts.server), startDevOpenAI(opts.dev)]);
    ({ client, nc } = await testClient(server.url));
    if (opts.applyStreams) await applyStreams(nc, streams.dir);
    jsm = await jetstreamManager(nc);
  });

  afterEach(async () => {
    await rig.stopProxies(500);
    if (opts.resetDev !== false) {
      rig.dev.reset();
      opts.devReset?.(rig.dev);
    }
    for (const s of opts.purge ?? []) await rig.jsm.streams.purge(s).catch(() => undefined);
    await opts.afterEach?.(rig);
  });

  afterAll(async () => {
    await nc?.close();
    await Promise.all([server?.stop(), dev?.close()]);
    streams.cleanup();
  });

  return rig;
}

/** UTF-8 text to bytes and back. */
export const sc = {
  encode: (s: string): Uint8Array => new TextEncoder().encode(s),
  decode: (d: Uint8Array): string => new TextDecoder().decode(d),
};

/**
 * The first message of `sub`; rejects when the subscription closes without one, or, with
 * `ms`, when none arrives within `ms`.
 */
export async function first<T>(sub: AsyncIterable<T>, ms?: number): Promise<T> {
  const next = (async () => {
    for await (const m of sub) return m;
    throw new Error("subscription closed without a message");
  })();
  if (ms === undefined) return next;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([next, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
