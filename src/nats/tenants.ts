/**
 * Admission at submission time: an unknown tenant is refused (400) and a tenant past
 * its `max_queued` too (429), before anything is written. The tenants and their
 * limits are the deployed ones: `streams apply` and `serve` write them into the
 * request stream's metadata, where clients with no configuration of their own read
 * them; the proxy itself (the compat shim) passes its configuration.
 *
 * The queued count of a tenant is its lane consumers' waiting plus unacknowledged
 * messages, read at most every `refreshMs`, with this process's own submissions
 * added in between, so one busy submitter cannot overshoot the limit.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { Code } from "../protocol/codes.js";
import {
  PRIORITIES,
  laneConsumer,
  tenantProblem,
  type TenantSettings,
  type Tenants,
} from "../protocol/lanes.js";

/** Stream metadata keys on the request stream. */
export const TENANTS_METADATA = "nats-openai-proxy.tenants";
export const CONSUMER_METADATA = "nats-openai-proxy.consumer";

export interface Refusal {
  code: number;
  message: string;
}

export interface TenantAdmission {
  /** Why a submission for `tenant` must be refused now, or undefined to go ahead. */
  check(tenant: string): Promise<Refusal | undefined>;
  /** Counts a submission that was accepted. */
  accepted(tenant: string): void;
}

export interface AdmissionOptions {
  stream: string;
  /** the proxy's own configuration; read from the stream's metadata when absent */
  tenants?: Tenants;
  consumerBase?: string;
  /** how old a queued count may be (default 200 ms) */
  refreshMs?: number;
  /** how long the stream's metadata is kept (default 5 s) */
  metadataTtlMs?: number;
}

interface Deployed {
  tenants: Tenants;
  consumerBase: string;
}

/** The metadata that tells clients the deployed tenants. */
export function tenantsMetadata(tenants: Tenants, consumerBase: string): Record<string, string> {
  return { [TENANTS_METADATA]: JSON.stringify(tenants), [CONSUMER_METADATA]: consumerBase };
}

/** Creates the admission check for one stream. */
export function tenantAdmission(jsm: JetStreamManager, o: AdmissionOptions): TenantAdmission {
  const refreshMs = o.refreshMs ?? 200;
  let deployed: { at: number; value: Deployed | undefined } | undefined;
  const counts = new Map<string, { at: number; n: number }>();

  async function read(): Promise<Deployed | undefined> {
    if (o.tenants) return { tenants: o.tenants, consumerBase: o.consumerBase ?? "openai-proxy" };
    if (deployed && Date.now() - deployed.at < (o.metadataTtlMs ?? 5000)) return deployed.value;
    let value: Deployed | undefined;
    try {
      const md = (await jsm.streams.info(o.stream)).config.metadata ?? {};
      const t = md[TENANTS_METADATA];
      value = t
        ? {
            tenants: JSON.parse(t) as Tenants,
            consumerBase: md[CONSUMER_METADATA] ?? "openai-proxy",
          }
        : undefined;
    } catch {
      // Not allowed to read stream info, or JetStream away: the server still refuses
      // a subject no lane serves; only max_queued goes unchecked.
      value = undefined;
    }
    deployed = { at: Date.now(), value };
    return value;
  }

  async function queued(tenant: string, base: string): Promise<number> {
    const c = counts.get(tenant);
    if (c && Date.now() - c.at < refreshMs) return c.n;
    let n = 0;
    for (const p of PRIORITIES) {
      const ci = await jsm.consumers.info(o.stream, laneConsumer(base, tenant, p));
      n += ci.num_pending + ci.num_ack_pending;
    }
    counts.set(tenant, { at: Date.now(), n });
    return n;
  }

  return {
    async check(tenant) {
      const bad = tenantProblem(tenant);
      if (bad) return { code: Code.badRequest, message: bad };
      const d = await read();
      if (!d) return undefined;
      const t: TenantSettings | undefined = d.tenants[tenant];
      if (!t) {
        return {
          code: Code.badRequest,
          message: `unknown tenant "${tenant}": the proxy serves ${Object.keys(d.tenants).join(", ")} (add it under tenants in the configuration and run "nats-openai-proxy streams apply")`,
        };
      }
      if (t.max_queued === undefined) return undefined;
      let n: number;
      try {
        n = await queued(tenant, d.consumerBase);
      } catch {
        return undefined; // depth unknown: the server-side limits still hold
      }
      if (n >= t.max_queued) {
        return {
          code: Code.rateLimited,
          message: `tenant "${tenant}" has ${n} requests queued, its max_queued is ${t.max_queued}: retry once some are served`,
        };
      }
      return undefined;
    },
    accepted(tenant) {
      const c = counts.get(tenant);
      if (c) c.n++;
    },
  };
}
