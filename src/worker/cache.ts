/**
 * The response cache (docs/protocol.md, "Response cache"): successful answers in the KV
 * bucket OPENAI_CACHE, keyed by the sha256 of the normalised request.
 *
 * Each entry holds its own expiry, and a reader treats an expired entry as a miss, so
 * the TTL holds on every supported server. Where the server has per-message TTL
 * (2.11+), the entry is also written with it and the server removes it; on 2.10 the
 * bucket's max_age (cache.max_ttl) bounds what stays behind.
 *
 * The cache never fails a request: a bucket that cannot be read is a miss, an answer
 * that cannot be written (too large, NATS trouble) is simply not cached.
 */
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../log.js";
import { cacheKey, isDeterministic, parseCacheTtl } from "../protocol/cache.js";
import type { ChatParams } from "../protocol/request.js";
import type { CompletionLike } from "../protocol/result.js";

/** What the cache does for one request. */
export interface CachePlan {
  key: string;
  ttlMs: number;
}

export interface ResponseCache {
  /**
   * Whether and how long to cache this request: the `Proxy-Cache` header's TTL, or
   * `cache.ttl` for a deterministic request to a model in `cache.models`.
   * @throws RequestError (400) for an unparsable header
   */
  plan(header: string, params: ChatParams): CachePlan | undefined;
  /** The cached answer, or undefined (a miss: none, expired, or unreadable). */
  get(plan: CachePlan): Promise<CompletionLike | undefined>;
  /** Caches a successful answer; never throws. */
  put(plan: CachePlan, completion: CompletionLike): Promise<void>;
}

export interface CacheObserver {
  cache(result: "hit" | "miss", bytes: number): void;
}

export interface CacheOptions {
  bucket: string;
  /** models whose deterministic requests are cached without the header */
  models: readonly string[];
  /** TTL of what `models` caches */
  ttlMs: number;
  /** the bucket's max_age: no entry lives longer */
  maxTtlMs: number;
  replicas: number;
  /** the server has per-message TTL (2.11+) */
  messageTtl: boolean;
  observer?: CacheObserver;
}

interface Entry {
  exp: number;
  completion: CompletionLike;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
/** Room for the KV message's subject and headers inside max_payload. */
const OVERHEAD = 1024;

/** A cache on a KV bucket, created the first time it is used. */
export function createResponseCache(
  nc: NatsConnection,
  o: CacheOptions,
  log: Logger,
): ResponseCache {
  const models = new Set(o.models);
  let bucket: Promise<KV> | undefined;
  const kv = () => {
    bucket ??= new Kvm(nc)
      .create(o.bucket, {
        history: 1,
        ttl: o.maxTtlMs,
        replicas: o.replicas,
        description:
          "nats-openai-proxy: cached answers by request hash (Proxy-Cache, cache.models)",
        ...(o.messageTtl ? { markerTTL: 60_000 } : {}),
      })
      .catch((e: unknown) => {
        bucket = undefined; // try again next time
        throw e;
      });
    return bucket;
  };
  return {
    plan(header, params) {
      if (header.trim() !== "")
        return { key: cacheKey(params), ttlMs: Math.min(parseCacheTtl(header), o.maxTtlMs) };
      if (models.has(params.model) && isDeterministic(params))
        return { key: cacheKey(params), ttlMs: Math.min(o.ttlMs, o.maxTtlMs) };
      return undefined;
    },
    async get(plan) {
      try {
        const e = await (await kv()).get(plan.key);
        if (e && e.operation === "PUT" && e.value.length > 0) {
          const entry = JSON.parse(dec.decode(e.value)) as Entry;
          if (entry.exp > Date.now() && entry.completion) {
            o.observer?.cache("hit", e.value.length);
            return entry.completion;
          }
        }
      } catch (err) {
        log.warn({ err, bucket: o.bucket }, "response cache unreadable; calling the API");
      }
      o.observer?.cache("miss", 0);
      return undefined;
    },
    async put(plan, completion) {
      const value = enc.encode(JSON.stringify({ exp: Date.now() + plan.ttlMs, completion }));
      const max = nc.info?.max_payload ?? 0;
      if (max > 0 && value.length + OVERHEAD > max) {
        log.debug(
          { key: plan.key, bytes: value.length, max_payload: max },
          "answer too large for the response cache; not cached",
        );
        return;
      }
      try {
        const b = await kv();
        if (o.messageTtl) {
          try {
            await b.create(plan.key, value, `${Math.max(1, Math.ceil(plan.ttlMs / 1000))}s`);
            return;
          } catch (e) {
            // Already cached by someone else, or a bucket made without per-message TTL:
            // a plain put (the entry's own expiry still holds).
            log.debug({ err: e, key: plan.key }, "cache create with TTL refused; plain put");
          }
        }
        await b.put(plan.key, value);
      } catch (err) {
        log.debug({ err, key: plan.key }, "could not cache the answer");
      }
    },
  };
}
