/**
 * The operator page's recent history: 15 minutes of 10-second buckets, fed by the worker's
 * Finished records, each with counts and two latency histograms (end to end and upstream)
 * of fixed size, so memory and the cost of a record stay constant whatever the load.
 */
import type { Finished } from "../worker/handle.js";
import type { WorkerObserver } from "../worker/worker.js";

export const BUCKET_MS = 10_000;
export const BUCKETS = 90;

// Geometric latency bins: bin i covers [BASE·R^(i-1), BASE·R^i) ms; 64 bins reach ~35 min.
const BINS = 64;
const BASE_MS = 1;
const RATIO = 1.25;
const LOG_RATIO = Math.log(RATIO);

function binOf(ms: number): number {
  if (!(ms >= BASE_MS)) return 0;
  return Math.min(BINS - 1, 1 + Math.floor(Math.log(ms / BASE_MS) / LOG_RATIO));
}

/** The geometric middle of a bin, in ms (0 for the first). */
function binValue(i: number): number {
  if (i === 0) return 0;
  return BASE_MS * Math.pow(RATIO, i - 0.5);
}

/** The q-quantile of a histogram (undefined when empty), within one bin's width (25 %). */
export function quantile(h: ArrayLike<number>, q: number): number | undefined {
  let n = 0;
  for (let i = 0; i < h.length; i++) n += h[i]!;
  if (n === 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < h.length; i++) {
    seen += h[i]!;
    if (seen >= rank) return Math.round(binValue(i) * 10) / 10;
  }
  return undefined;
}

interface Slot {
  start: number;
  completed: number;
  errors: number;
  /** deliveries with no verdict: retry, paused, requeued, aborted */
  other: number;
  latency: Uint32Array;
  upstream: Uint32Array;
}

/** One 10-second bucket as the API shows it. */
export interface ActivityBucket {
  /** start of the bucket, epoch ms */
  t: number;
  /** requests answered (ok, replayed, error) */
  completed: number;
  /** of which answered with an error (dead-lettered) */
  errors: number;
  /** deliveries handed back without a verdict (retry, paused, requeued, aborted) */
  other: number;
  /** enqueue → answer, ms */
  p50?: number;
  p95?: number;
  /** upstream API time of answered requests that called it, ms */
  upstreamP50?: number;
  upstreamP95?: number;
}

export interface ActivitySnapshot {
  bucketMs: number;
  /** oldest first, the last one is the current (partial) bucket */
  buckets: ActivityBucket[];
  /** over the whole window */
  total: { completed: number; errors: number; p50?: number; p95?: number };
}

export interface Activity {
  record(f: Finished, now?: number): void;
  snapshot(now?: number): ActivitySnapshot;
}

/** An empty window. */
export function createActivity(): Activity {
  const slots: Slot[] = Array.from({ length: BUCKETS }, () => ({
    start: -1,
    completed: 0,
    errors: 0,
    other: 0,
    latency: new Uint32Array(BINS),
    upstream: new Uint32Array(BINS),
  }));
  const slotFor = (now: number): Slot => {
    const start = Math.floor(now / BUCKET_MS) * BUCKET_MS;
    const s = slots[(start / BUCKET_MS) % BUCKETS]!;
    if (s.start !== start) {
      s.start = start;
      s.completed = s.errors = s.other = 0;
      s.latency.fill(0);
      s.upstream.fill(0);
    }
    return s;
  };
  return {
    record(f, now = Date.now()) {
      const s = slotFor(now);
      if (f.outcome !== "ok" && f.outcome !== "replayed" && f.outcome !== "error") {
        s.other++;
        return;
      }
      s.completed++;
      if (f.outcome === "error") s.errors++;
      s.latency[binOf(f.queueWaitMs + f.totalMs)]!++;
      if (f.calls > 0 && f.outcome === "ok") s.upstream[binOf(f.upstreamMs)]!++;
    },
    snapshot(now = Date.now()) {
      const current = Math.floor(now / BUCKET_MS) * BUCKET_MS;
      const buckets: ActivityBucket[] = [];
      const all = new Uint32Array(BINS);
      let completed = 0;
      let errors = 0;
      for (let i = BUCKETS - 1; i >= 0; i--) {
        const t = current - i * BUCKET_MS;
        const s = slots[(t / BUCKET_MS) % BUCKETS]!;
        if (s.start !== t) {
          buckets.push({ t, completed: 0, errors: 0, other: 0 });
          continue;
        }
        completed += s.completed;
        errors += s.errors;
        for (let b = 0; b < BINS; b++) all[b]! += s.latency[b]!;
        buckets.push(
          withQuantiles(
            { t, completed: s.completed, errors: s.errors, other: s.other },
            s.latency,
            s.upstream,
          ),
        );
      }
      const total: ActivitySnapshot["total"] = { completed, errors };
      const p50 = quantile(all, 0.5);
      const p95 = quantile(all, 0.95);
      if (p50 !== undefined) total.p50 = p50;
      if (p95 !== undefined) total.p95 = p95;
      return { bucketMs: BUCKET_MS, buckets, total };
    },
  };
}

function withQuantiles(
  b: ActivityBucket,
  latency: Uint32Array,
  upstream: Uint32Array,
): ActivityBucket {
  const set = (k: "p50" | "p95" | "upstreamP50" | "upstreamP95", v: number | undefined) => {
    if (v !== undefined) b[k] = v;
  };
  set("p50", quantile(latency, 0.5));
  set("p95", quantile(latency, 0.95));
  set("upstreamP50", quantile(upstream, 0.5));
  set("upstreamP95", quantile(upstream, 0.95));
  return b;
}

/** An observer reporting to `inner` and recording finished requests into `a`. */
export function observeActivity(inner: WorkerObserver, a: Activity): WorkerObserver {
  return {
    finished(f) {
      inner.finished(f);
      a.record(f);
    },
    retry: (f) => inner.retry(f),
    breaker: (s) => inner.breaker(s),
    inflight: (n) => inner.inflight(n),
    poison: (id) => inner.poison(id),
  };
}
