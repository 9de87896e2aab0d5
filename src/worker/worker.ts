/**
 * The worker: a durable pull consumer with bounded concurrency, a circuit breaker
 * with a probe, poison-message handling, and an explicit, idempotent lifecycle.
 */
import { setMaxListeners } from "node:events";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Lane } from "../nats/lanes.js";
import { ConfigError } from "../config/load.js";
import { isMissing } from "../nats/errors.js";
import type { ChatClient } from "../llm/chat-client.js";
import type { Logger } from "../log.js";
import { CircuitBreaker, type BreakerState } from "./breaker.js";
import type { Failure } from "./errors.js";
import { handleMessage, type Finished, type HandleDeps, type HandleSettings } from "./handle.js";
import type { Outputs } from "./outputs.js";
import { watchPoison, type PoisonWatcher } from "./poison.js";
import { LanePuller } from "./puller.js";
import type { WorkMsg } from "./work-msg.js";
import { sleep } from "./sleep.js";
import type { RateLimiter } from "./ratelimit.js";
import type { TenantGate } from "./tenant-gate.js";
import type { Tracing } from "../tracing/tracing.js";

export type WorkerState = "INITIALIZED" | "RUNNING" | "STOPPING" | "STOPPED";

/** What the worker reports; metrics implement it. */
export interface WorkerObserver {
  finished(f: Finished): void;
  retry(f: Failure): void;
  breaker(state: BreakerState): void;
  inflight(n: number): void;
  poison(id: string): void;
}

export interface WorkerOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  chat: ChatClient;
  out: Outputs;
  log: Logger;
  observer?: WorkerObserver;
  stream: string;
  /** the lane consumers to serve, highest priority first */
  lanes: readonly Lane[];
  concurrency: number;
  pullExpiresMs: number;
  /** how often the lanes' queue depths are read */
  lanePollMs: number;
  /** per-tenant max_concurrency over all instances */
  tenantGate?: TenantGate;
  /** per-tenant requests and tokens per minute */
  tenantLimiter?: RateLimiter;
  breaker: { window: number; failureRatio: number; probeIntervalMs: number };
  poisonStream: string;
  poisonConsumer: string;
  settings: Omit<HandleSettings, "maxDeliver" | "ackWaitMs" | "probeIntervalMs">;
  limiter?: RateLimiter;
  /** streamed deltas are also stored here (OPENAI_STREAMS) */
  streamLog?: HandleDeps["streamLog"];
  /** the response cache */
  cache?: HandleDeps["cache"];
  /** W3C trace propagation and span export */
  tracing?: Tracing;
  /** wraps each delivered message before it is handled (tests inject failpoints here) */
  wrapMessage?: (m: WorkMsg) => WorkMsg;
}

export interface Worker {
  readonly state: WorkerState;
  readonly breakerState: BreakerState;
  readonly inFlight: number;
  start(): Promise<void>;
  /** Lets the scheduler look for work again (a tenant's limit freed up). */
  kick(): void;
  /** Stop pulling, let in-flight work finish within `graceMs`, nak the rest. Idempotent. */
  stop(graceMs: number): Promise<void>;
}

/** Creates a worker; nothing happens until `start()`. */
export function createWorker(o: WorkerOptions): Worker {
  let state: WorkerState = "INITIALIZED";
  let puller: LanePuller | undefined;
  let poisonSub: PoisonWatcher | undefined;
  let stopping: Promise<void> | undefined;
  const hardStop = new AbortController();
  // Every in-flight call listens on it; the default limit of 10 would warn.
  setMaxListeners(0, hardStop.signal);
  const probeStop = new AbortController();
  const obs = o.observer;
  const log = o.log;

  const breaker = new CircuitBreaker(
    { window: o.breaker.window, failureRatio: o.breaker.failureRatio },
    (s, reason) => {
      obs?.breaker(s);
      if (s === "open") {
        log.error({ breaker: s, reason }, `upstream API unavailable, pausing intake: ${reason}`);
        puller?.pause();
        void probeLoop();
      } else {
        log.info({ breaker: s }, "upstream API healthy again, resuming intake");
        puller?.resume();
      }
    },
  );

  async function probeLoop(): Promise<void> {
    while (breaker.isOpen && !probeStop.signal.aborted) {
      await sleep(o.breaker.probeIntervalMs, probeStop.signal);
      if (probeStop.signal.aborted) return;
      try {
        await o.chat.probe(probeStop.signal);
        breaker.close();
      } catch (e) {
        log.debug({ err: e }, "probe failed; still paused");
      }
    }
  }

  return {
    get state() {
      return state;
    },
    get breakerState() {
      return breaker.state;
    },
    get inFlight() {
      return puller?.inFlight ?? 0;
    },
    kick() {
      puller?.kick();
    },
    async start() {
      if (state !== "INITIALIZED") return;
      const first = o.lanes[0];
      if (!first) throw new Error("no lanes to serve (tenants is empty)");
      // Every lane consumer must exist; they share the template's settings.
      for (const l of o.lanes) {
        await o.jsm.consumers.info(o.stream, l.consumer).catch((e: unknown) => {
          throw isMissing(e)
            ? new ConfigError(
                `consumer ${o.stream}/${l.consumer} (tenant ${l.tenant}, priority ${l.priority}) is missing: run "nats-openai-proxy streams apply" with this configuration`,
              )
            : e;
        });
      }
      const info = await o.jsm.consumers.info(o.stream, first.consumer);
      const ackWaitMs = Math.floor((info.config.ack_wait ?? 30e9) / 1e6);
      const md = info.config.max_deliver ?? -1;
      const maxDeliver = md > 0 ? md : Number.MAX_SAFE_INTEGER;
      if (info.config.backoff?.length) {
        log.warn(
          { consumer: first.consumer },
          "consumer has a server-side backoff: it overrides ack_wait; remove it (delays come from nak)",
        );
      }
      const settings: HandleSettings = {
        ...o.settings,
        maxDeliver,
        ackWaitMs,
        probeIntervalMs: o.breaker.probeIntervalMs,
      };
      const handle = async (m: WorkMsg, lane: Lane) => {
        obs?.inflight(puller?.inFlight ?? 0);
        const f = await handleMessage(o.wrapMessage ? o.wrapMessage(m) : m, {
          chat: o.chat,
          out: o.out,
          breaker,
          settings,
          log,
          signal: hardStop.signal,
          onRetry: (x) => obs?.retry(x),
          ...(o.limiter ? { limiter: o.limiter } : {}),
          ...(o.tenantGate ? { tenantGate: o.tenantGate } : {}),
          ...(o.tenantLimiter ? { tenantLimiter: o.tenantLimiter } : {}),
          ...(o.streamLog ? { streamLog: o.streamLog } : {}),
          ...(o.cache ? { cache: o.cache } : {}),
          ...(o.tracing ? { tracing: o.tracing } : {}),
          quietDelay: () => puller?.quietDelay() ?? 0,
          lane,
        });
        obs?.finished(f);
        logFinished(log, f);
        obs?.inflight((puller?.inFlight ?? 1) - 1);
      };
      puller = new LanePuller(
        o.nc,
        o.jsm,
        o.stream,
        o.lanes,
        handle,
        {
          capacity: o.concurrency,
          expiresMs: o.pullExpiresMs,
          pollMs: o.lanePollMs,
          pausedNakDelayMs: o.breaker.probeIntervalMs,
          ...(o.tenantGate ? { tenantBlocked: (t: string) => o.tenantGate!.blocked(t) } : {}),
        },
        log,
      );
      poisonSub = await watchPoison(
        o.nc,
        o.js,
        o.jsm,
        o.out,
        {
          stream: o.stream,
          consumer: "*",
          queue: o.poisonConsumer,
          poisonStream: o.poisonStream,
          poisonConsumer: o.poisonConsumer,
          onPoison: (id) => obs?.poison(id),
          reservedPrefixes: o.settings.reservedPrefixes,
        },
        log,
      );
      state = "RUNNING";
      puller.start();
      log.info(
        {
          stream: o.stream,
          lanes: o.lanes.map((l) => l.consumer),
          concurrency: o.concurrency,
          ackWaitMs,
          maxDeliver,
        },
        "worker started",
      );
    },
    stop(graceMs: number) {
      stopping ??= (async () => {
        if (state !== "RUNNING") {
          state = "STOPPED";
          return;
        }
        state = "STOPPING";
        probeStop.abort();
        poisonSub?.stop();
        const p = puller;
        if (p) {
          p.stopPulling();
          const inflight = p.inFlight;
          if (inflight > 0) log.info({ inflight, graceMs }, "finishing in-flight requests");
          const graceOver = new AbortController();
          const idle = p.idle().then(() => graceOver.abort());
          await sleep(graceMs, graceOver.signal);
          if (p.inFlight > 0) {
            log.warn(
              { inflight: p.inFlight },
              "grace period over: returning unfinished requests to the queue",
            );
            hardStop.abort();
            await idle;
          }
          p.close();
        }
        state = "STOPPED";
      })();
      return stopping;
    },
  };
}

function logFinished(log: Logger, f: Finished): void {
  const line = {
    id: f.id,
    model: f.model,
    tenant: f.tenant,
    priority: f.priority,
    outcome: f.outcome,
    attempts: f.attempts,
    calls: f.calls,
    queue_wait_ms: f.queueWaitMs,
    upstream_ms: f.upstreamMs,
    total_ms: f.totalMs,
    ...(f.promptTokens !== undefined
      ? { prompt_tokens: f.promptTokens, completion_tokens: f.completionTokens }
      : {}),
    ...(f.code !== undefined ? { code: f.code, error: f.error } : {}),
  };
  if (f.outcome === "ok" || f.outcome === "replayed") log.info(line, "request finished");
  else log.warn(line, "request not completed");
}
