/**
 * Rate limits shared by every proxy instance, per model.
 *
 * Requests per minute are enforced by the server itself: each call first stores a
 * permit in a small per-model JetStream stream with `max_msgs = permits per window`,
 * `max_age = window` and `discard: new`. The stream refuses a permit while the window
 * is full — atomically, across instances, with no read-modify-write and no contention
 * retries (a KV counter needs CAS loops; measured costly in JETSTREAM_NOTES §12).
 * The window is short (≥ 5 permits, ≥ 1 s) so load is spread evenly over the minute,
 * as the API's own limiter expects.
 *
 * Tokens per minute are shared through usage events: every instance publishes the
 * tokens each call used on `<prefix>.usage.<model>` and keeps a one-minute sliding sum
 * of everyone's events. A call waits while the sum is at the limit.
 *
 * Both adapt to the API's headers: when `x-ratelimit-remaining-*` reaches 0, calls to
 * that model wait until `x-ratelimit-reset-*`.
 */
import { nanos, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { apiErrCode } from "../nats/errors.js";
import type { Logger } from "../log.js";
import { parseDuration } from "./backoff.js";
import { sleep } from "./sleep.js";

export interface ModelLimit {
  rpm?: number;
  tpm?: number;
}

export interface RateLimiter {
  /** Waits until a call to `model` is allowed. Resolves early (without a permit) when `signal` aborts. */
  acquire(model: string, signal: AbortSignal): Promise<void>;
  /** Learns from the API's response headers (lower-case keys) and the tokens a call used. */
  observe(model: string, headers: Readonly<Record<string, string>>, tokens?: number): void;
  close(): void;
}

/** A limiter that never waits (no limits configured). Still honours API headers. */
export interface RateLimiterOptions {
  limits: Readonly<Record<string, ModelLimit>>;
  /** stream name prefix for RPM permits, e.g. OPENAI_RATE */
  streamPrefix: string;
  /** subject prefix, e.g. openai.rate */
  subjectPrefix: string;
  /** replicas of the permit streams (the proxy passes the requests stream's) */
  replicas?: number;
}

/** Window and permits per window for a requests-per-minute limit. */
export function rpmWindow(rpm: number): { windowMs: number; permits: number } {
  const windowMs = Math.max(1000, Math.ceil((60_000 * 5) / rpm));
  return { windowMs, permits: Math.max(1, Math.floor((rpm * windowMs) / 60_000)) };
}

/** A subject token / stream name part for a model name. */
export function modelToken(model: string): string {
  return model.replace(/[^A-Za-z0-9_-]/g, "_");
}

/** Sliding one-minute token sum (pure; times are passed in). */
export class TokenWindow {
  private readonly events: { t: number; n: number }[] = [];
  private sum = 0;
  add(t: number, n: number): void {
    this.events.push({ t, n });
    this.sum += n;
  }
  total(now: number): number {
    while (this.events.length > 0 && this.events[0]!.t <= now - 60_000)
      this.sum -= this.events.shift()!.n;
    return this.sum;
  }
  /** ms until the oldest event leaves the window */
  nextExpiry(now: number): number {
    const first = this.events[0];
    return first ? Math.max(1, first.t + 60_000 - now) : 0;
  }
}

/** Creates the shared limiter. */
export function createRateLimiter(
  nc: NatsConnection,
  js: JetStreamClient,
  jsm: JetStreamManager,
  o: RateLimiterOptions,
  log: Logger,
): RateLimiter {
  const blockedUntil = new Map<string, number>();
  const tokens = new Map<string, TokenWindow>();
  const ready = new Map<string, Promise<void>>();
  const subs: Subscription[] = [];
  const enc = new TextEncoder();

  for (const [model, l] of Object.entries(o.limits)) {
    if (!l.tpm) continue;
    const w = new TokenWindow();
    tokens.set(model, w);
    subs.push(
      nc.subscribe(`${o.subjectPrefix}.usage.${modelToken(model)}`, {
        callback: (_e, m) => {
          const n = Number(new TextDecoder().decode(m.data));
          if (Number.isFinite(n) && n > 0) w.add(Date.now(), n);
        },
      }),
    );
  }

  const ensureStream = (model: string, rpm: number): Promise<void> => {
    let p = ready.get(model);
    if (!p) {
      const { windowMs, permits } = rpmWindow(rpm);
      const name = `${o.streamPrefix}_${modelToken(model)}`;
      const cfg = {
        name,
        subjects: [`${o.subjectPrefix}.permit.${modelToken(model)}`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.Memory,
        discard: DiscardPolicy.New,
        max_msgs: permits,
        max_age: nanos(windowMs),
        duplicate_window: nanos(Math.min(windowMs, 120_000)),
        num_replicas: o.replicas ?? 1,
      };
      p = jsm.streams
        .add(cfg)
        .then(() => undefined)
        .catch(async (e: unknown) => {
          // The stream exists with other settings: the limit (or the replicas) changed.
          if (apiErrCode(e) !== 10058) throw e;
          await jsm.streams.update(name, cfg);
        })
        .catch((e: unknown) => {
          // A refused create or update must not stick: the next call tries again.
          ready.delete(model);
          throw e;
        });
      ready.set(model, p);
    }
    return p;
  };

  return {
    async acquire(model, signal) {
      const until = blockedUntil.get(model) ?? 0;
      if (until > Date.now()) await sleep(until - Date.now(), signal);
      const l = o.limits[model];
      if (!l) return;
      const w = tokens.get(model);
      while (w && l.tpm && w.total(Date.now()) >= l.tpm && !signal.aborted) {
        await sleep(w.nextExpiry(Date.now()), signal);
      }
      if (!l.rpm) return;
      await ensureStream(model, l.rpm);
      const subject = `${o.subjectPrefix}.permit.${modelToken(model)}`;
      const { windowMs, permits } = rpmWindow(l.rpm);
      for (let attempt = 0; !signal.aborted; attempt++) {
        try {
          await js.publish(subject, enc.encode(""));
          return;
        } catch (e) {
          if (apiErrCode(e) !== 10077) {
            // The stream may be gone (deleted, or lost with a server): set it up again.
            ready.delete(model);
            throw e;
          }
          // Window full: try again about when the next permit frees, spread with jitter.
          await sleep(Math.round((windowMs / permits) * (0.5 + Math.random())), signal);
          if (attempt === 200) log.debug({ model }, "still waiting for a rate-limit permit");
        }
      }
    },
    observe(model, headers, used) {
      const now = Date.now();
      for (const kind of ["requests", "tokens"]) {
        const remaining = headers[`x-ratelimit-remaining-${kind}`];
        const reset = headers[`x-ratelimit-reset-${kind}`];
        if (remaining !== undefined && Number(remaining) <= 0 && reset !== undefined) {
          const d = parseDuration(reset);
          if (d !== undefined)
            blockedUntil.set(model, Math.max(blockedUntil.get(model) ?? 0, now + d));
        }
      }
      if (used && used > 0 && o.limits[model]?.tpm)
        nc.publish(`${o.subjectPrefix}.usage.${modelToken(model)}`, enc.encode(String(used)));
    },
    close() {
      for (const s of subs) s.unsubscribe();
    },
  };
}
