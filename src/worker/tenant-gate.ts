/**
 * Per-tenant `max_concurrency`, held across every proxy instance, in a KV bucket.
 *
 * One key per tenant (`conc.<tenant>`) holds every instance's count of calls in flight
 * for that tenant, each with an expiry: `{"<instance>": {"n": 2, "exp": 1767…}}`. A
 * call starts only after a compare-and-set write that keeps the sum within the limit,
 * so two instances can never both take the last slot. Instances refresh their entry
 * while they hold slots; the entry of an instance that crashed expires (`leaseMs`),
 * so a crash costs the tenant those slots for at most that long.
 *
 * A watch on the bucket keeps every instance's view of each tenant's total current;
 * the scheduler uses it not to pull work for a tenant at its limit.
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { nuid } from "@nats-io/transport-node";
import type { Logger } from "../log.js";
import { apiErrCode } from "../nats/errors.js";
import type { Tenants } from "../protocol/lanes.js";
import { sleep } from "./sleep.js";

export interface TenantGate {
  /** Waits until `tenant` may start a call; resolves with its release (call once). */
  acquire(tenant: string, signal: AbortSignal): Promise<() => void>;
  /** True when the tenant is at its limit, as last seen. */
  blocked(tenant: string): boolean;
  /** The tenant's calls in flight over all instances, as last seen. */
  inFlight(tenant: string): number;
  close(): void;
}

export interface TenantGateOptions {
  bucket: string;
  /** how long an instance's entry lives without a refresh */
  leaseMs: number;
  replicas: number;
  /** called when a tenant's total changes (the scheduler may pull again) */
  onChange?: () => void;
}

type Leases = Record<string, { n: number; exp: number }>;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Sum of the live entries (pure). */
export function liveTotal(l: Leases, now: number): number {
  let n = 0;
  for (const e of Object.values(l)) if (e.exp > now) n += e.n;
  return n;
}

function parse(e: KvEntry | null): Leases {
  if (!e || e.value.length === 0) return {};
  try {
    return JSON.parse(dec.decode(e.value)) as Leases;
  } catch {
    return {};
  }
}

/** A gate that never waits: no tenant has a max_concurrency. */
const OPEN: TenantGate = {
  acquire: () => Promise.resolve(() => undefined),
  blocked: () => false,
  inFlight: () => 0,
  close: () => undefined,
};

/** Creates the gate (and its bucket) for the tenants that have a `max_concurrency`. */
export async function createTenantGate(
  nc: NatsConnection,
  tenants: Tenants,
  o: TenantGateOptions,
  log: Logger,
): Promise<TenantGate> {
  const limited = Object.entries(tenants).filter(([, t]) => t.max_concurrency !== undefined);
  if (limited.length === 0) return OPEN;
  const max = new Map(limited.map(([name, t]) => [name, t.max_concurrency!]));
  const kv: KV = await new Kvm(nc).create(o.bucket, {
    history: 1,
    storage: "memory" as never,
    replicas: o.replicas,
    description: "nats-openai-proxy: calls in flight per tenant and instance (max_concurrency)",
  });
  const me = nuid.next();
  const mine = new Map<string, number>();
  const totals = new Map<string, number>();
  const key = (t: string) => `conc.${t}`;

  /** Compare-and-set loop: `change` gets the live entries and returns the new own count, or undefined to give up. */
  async function cas(
    tenant: string,
    change: (l: Leases) => number | undefined,
  ): Promise<boolean | undefined> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const e = await kv.get(key(tenant));
      const now = Date.now();
      const l = parse(e);
      for (const [id, x] of Object.entries(l)) if (x.exp <= now) delete l[id];
      const n = change(l);
      if (n === undefined) {
        totals.set(tenant, liveTotal(l, now));
        return false;
      }
      if (n > 0) l[me] = { n, exp: now + o.leaseMs };
      else delete l[me];
      const body = enc.encode(JSON.stringify(l));
      try {
        if (e) await kv.update(key(tenant), body, e.revision);
        else await kv.create(key(tenant), body);
        mine.set(tenant, n);
        totals.set(tenant, liveTotal(l, now));
        return true;
      } catch (err) {
        // Someone else wrote first: read again.
        const c = apiErrCode(err);
        if (c !== 10071 && c !== 10164) throw err;
      }
    }
    return undefined;
  }

  let closed = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of waiters) w();
    waiters.clear();
    o.onChange?.();
  };
  const watcher = await kv.watch({ key: "conc.>" });
  void (async () => {
    for await (const e of watcher) {
      const tenant = e.key.slice("conc.".length);
      totals.set(tenant, liveTotal(parse(e), Date.now()));
      wake();
    }
  })();
  const refresh = setInterval(
    () => {
      for (const [tenant, n] of mine) {
        if (n > 0)
          void cas(tenant, (l) => l[me]?.n ?? n).catch((e: unknown) =>
            log.debug({ err: e, tenant }, "tenant lease refresh failed"),
          );
      }
    },
    Math.max(100, Math.floor(o.leaseMs / 3)),
  );
  refresh.unref();

  return {
    async acquire(tenant, signal) {
      const limit = max.get(tenant);
      if (limit === undefined) return () => undefined;
      while (!signal.aborted && !closed) {
        const ok = await cas(tenant, (l) =>
          liveTotal(l, Date.now()) < limit ? (l[me]?.n ?? 0) + 1 : undefined,
        );
        if (ok) {
          let released = false;
          return () => {
            if (released) return;
            released = true;
            void cas(tenant, (l) => Math.max(0, (l[me]?.n ?? 1) - 1))
              .then(wake)
              .catch((e: unknown) => log.warn({ err: e, tenant }, "tenant lease release failed"));
          };
        }
        // At the limit: wait for a change (or a lease to expire).
        await Promise.race([
          new Promise<void>((r) => waiters.add(r)),
          sleep(Math.min(1000, o.leaseMs), signal),
        ]);
      }
      return () => undefined;
    },
    blocked(tenant) {
      const limit = max.get(tenant);
      return limit !== undefined && (totals.get(tenant) ?? 0) >= limit;
    },
    inFlight(tenant) {
      return totals.get(tenant) ?? 0;
    },
    close() {
      closed = true;
      clearInterval(refresh);
      watcher.stop();
      wake();
    },
  };
}
