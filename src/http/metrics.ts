/**
 * Prometheus metrics (prom-client, one registry per proxy so tests can run several).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BreakerState } from "../worker/breaker.js";
import type { Failure } from "../worker/errors.js";
import type { Finished } from "../worker/handle.js";
import type { WorkerObserver } from "../worker/worker.js";
import type { LaneDepth } from "../nats/depths.js";

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export interface Metrics extends WorkerObserver {
  readonly registry: Registry;
  shim(accepted: boolean, code?: number): void;
  /** async source of the DLQ size, read at scrape time */
  setDlqSize(fn: () => Promise<number>): void;
  /** async source of the queue depth per lane, read at scrape time */
  setLaneDepths(fn: () => Promise<LaneDepth[]>): void;
  /** a response-cache lookup: hit (with the bytes served) or miss */
  cache(result: "hit" | "miss", bytes: number): void;
}

/**
 * Creates the registry and every metric.
 * @param tenants the configured tenant names: only these become label values (a
 *   request for any other is counted as "other"), so labels stay bounded
 */
export function createMetrics(tenants: readonly string[] = ["default"]): Metrics {
  const known = new Set(tenants);
  const tenantLabel = (t: string) => (known.has(t) ? t : "other");
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "openai_proxy_process_" });
  const requests = new Counter({
    name: "openai_proxy_requests_total",
    help: "Finished deliveries by outcome, model, tenant and priority",
    labelNames: ["outcome", "model", "tenant", "priority"],
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: "openai_proxy_queue_wait_seconds",
    help: "Time from enqueue to delivery, by tenant and priority",
    labelNames: ["tenant", "priority"],
    buckets: BUCKETS,
    registers: [registry],
  });
  const upstream = new Histogram({
    name: "openai_proxy_upstream_seconds",
    help: "Upstream API time per request (including in-process retries)",
    labelNames: ["model"],
    buckets: BUCKETS,
    registers: [registry],
  });
  const total = new Histogram({
    name: "openai_proxy_request_seconds",
    help: "Handling time per delivery",
    buckets: BUCKETS,
    registers: [registry],
  });
  const inflight = new Gauge({
    name: "openai_proxy_in_flight",
    help: "Requests being handled now",
    registers: [registry],
  });
  const retries = new Counter({
    name: "openai_proxy_retries_total",
    help: "In-process upstream retries",
    labelNames: ["code"],
    registers: [registry],
  });
  const deadLetters = new Counter({
    name: "openai_proxy_dead_letters_total",
    help: "Requests dead-lettered by this process",
    labelNames: ["code"],
    registers: [registry],
  });
  const tokens = new Counter({
    name: "openai_proxy_tokens_total",
    help: "Tokens used, by direction (prompt, completion) and model",
    labelNames: ["direction", "model"],
    registers: [registry],
  });
  const breaker = new Gauge({
    name: "openai_proxy_breaker_open",
    help: "1 while the circuit breaker is open (intake paused)",
    registers: [registry],
  });
  const shim = new Counter({
    name: "openai_proxy_shim_requests_total",
    help: "Compat-subject requests by result",
    labelNames: ["result"],
    registers: [registry],
  });
  let dlqSize: (() => Promise<number>) | undefined;
  new Gauge({
    name: "openai_proxy_dlq_messages",
    help: "Messages in the dead-letter stream",
    registers: [registry],
    async collect() {
      if (!dlqSize) return;
      try {
        this.set(await dlqSize());
      } catch {
        // NATS away: keep the last value rather than failing the scrape.
      }
    },
  });
  let laneDepths: (() => Promise<LaneDepth[]>) | undefined;
  new Gauge({
    name: "openai_proxy_queue_depth",
    help: "Requests waiting in each lane (tenant and priority), read from its consumer",
    labelNames: ["tenant", "priority"],
    registers: [registry],
    async collect() {
      if (!laneDepths) return;
      try {
        for (const d of await laneDepths())
          this.set({ tenant: tenantLabel(d.tenant), priority: d.priority }, d.pending);
      } catch {
        // NATS away: keep the last values.
      }
    },
  });
  const cacheLookups = new Counter({
    name: "openai_proxy_cache_total",
    help: "Response-cache lookups by result (hit, miss)",
    labelNames: ["result"],
    registers: [registry],
  });
  const cacheBytes = new Counter({
    name: "openai_proxy_cache_bytes_total",
    help: "Bytes of cached answers served from the response cache",
    registers: [registry],
  });
  breaker.set(0);

  return {
    registry,
    finished(f: Finished) {
      const lane = { tenant: tenantLabel(f.tenant), priority: f.priority };
      requests.inc({ outcome: f.outcome, model: f.model, ...lane });
      queueWait.observe(lane, f.queueWaitMs / 1000);
      total.observe(f.totalMs / 1000);
      if (f.calls > 0) upstream.observe({ model: f.model }, f.upstreamMs / 1000);
      if (f.outcome === "error") deadLetters.inc({ code: String(f.code ?? 0) });
      if (f.promptTokens) tokens.inc({ direction: "prompt", model: f.model }, f.promptTokens);
      if (f.completionTokens)
        tokens.inc({ direction: "completion", model: f.model }, f.completionTokens);
    },
    retry(f: Failure) {
      retries.inc({ code: String(f.code) });
    },
    breaker(s: BreakerState) {
      breaker.set(s === "open" ? 1 : 0);
    },
    inflight(n: number) {
      inflight.set(n);
    },
    poison() {
      deadLetters.inc({ code: "poison" });
    },
    shim(accepted: boolean, code?: number) {
      shim.inc({ result: accepted ? "accepted" : String(code ?? "refused") });
    },
    setDlqSize(fn) {
      dlqSize = fn;
    },
    setLaneDepths(fn) {
      laneDepths = fn;
    },
    cache(result, bytes) {
      cacheLookups.inc({ result });
      if (bytes > 0) cacheBytes.inc(bytes);
    },
  };
}
