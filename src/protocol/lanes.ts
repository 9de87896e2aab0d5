/**
 * Lanes and tenants on the wire: every request has a priority and a tenant, both in
 * its subject, `<requests>.<tenant>.<priority>.<id>`. The plain `<requests>.<id>` of
 * earlier versions keeps working as tenant `default`, priority `normal`.
 * Pure data and parsing: no connection, no configuration loading.
 */
import { idProblem } from "./subjects.js";

export const PRIORITIES = ["high", "normal", "low"] as const;
export type Priority = (typeof PRIORITIES)[number];

export const DEFAULT_TENANT = "default";
export const LEGACY_PRIORITY: Priority = "normal";

/** Lane weights: with every lane backlogged each gets its weight's share of the slots. */
export const DEFAULT_LANE_WEIGHTS: Readonly<Record<Priority, number>> = Object.freeze({
  high: 8,
  normal: 4,
  low: 1,
});

/** One tenant's settings (configuration `tenants.<name>`). */
export interface TenantSettings {
  /** share of its priority's slots among tenants with queued work (default 1) */
  readonly weight: number;
  /** calls in flight at once, over all instances */
  readonly max_concurrency?: number;
  /** upstream requests per minute, over all instances */
  readonly rpm?: number;
  /** upstream tokens per minute, over all instances */
  readonly tpm?: number;
  /** queued requests (waiting or in flight); a submission past it is refused with 429 */
  readonly max_queued?: number;
}

export type Tenants = Readonly<Record<string, TenantSettings>>;

export const DEFAULT_TENANTS: Tenants = Object.freeze({
  [DEFAULT_TENANT]: Object.freeze({ weight: 1 }),
});

// A tenant is one subject token and part of a consumer name: no '.', '*', '>',
// whitespace; short enough for consumer and stream names.
const TENANT_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Why a tenant name is refused, or undefined when it is acceptable. */
export function tenantProblem(t: string): string | undefined {
  if (TENANT_RE.test(t)) return undefined;
  return `tenant "${t.slice(0, 70)}" must be 1–64 letters, digits, '_' or '-'`;
}

/** True for `high`, `normal` or `low`. */
export function isPriority(p: string): p is Priority {
  return (PRIORITIES as readonly string[]).includes(p);
}

/** `<prefix>.<tenant>.<priority>.<id>` */
export function laneSubject(
  prefix: string,
  tenant: string,
  priority: Priority,
  id: string,
): string {
  return `${prefix}.${tenant}.${priority}.${id}`;
}

/** The stream subject that captures one lane's requests. */
export function laneFilter(prefix: string, tenant: string, priority: Priority): string {
  return `${prefix}.${tenant}.${priority}.*`;
}

/** The subject of requests published the way earlier versions did, `<prefix>.<id>`. */
export function legacyFilter(prefix: string): string {
  return `${prefix}.*`;
}

/** The durable consumer that serves one lane, e.g. `openai-proxy-acme-high`. */
export function laneConsumer(base: string, tenant: string, priority: Priority): string {
  return `${base}-${tenant}-${priority}`;
}

/** True for a consumer name the proxy owns on the request stream (the template's or a lane's). */
export function isLaneConsumerName(name: string, consumerBase: string): boolean {
  return name === consumerBase || name.startsWith(`${consumerBase}-`);
}

export interface RequestAddress {
  tenant: string;
  priority: Priority;
  id: string;
  /** true for the plain `<prefix>.<id>` form */
  legacy: boolean;
}

/**
 * Reads tenant, priority and id from a request subject.
 * @returns the address, or a message naming what is wrong
 */
export function parseRequestSubject(prefix: string, subject: string): RequestAddress | string {
  if (!subject.startsWith(`${prefix}.`))
    return `request subject "${subject}" is not under ${prefix}.>`;
  const rest = subject.slice(prefix.length + 1).split(".");
  if (rest.length === 1) {
    const id = rest[0]!;
    return idProblem(id) ?? { tenant: DEFAULT_TENANT, priority: LEGACY_PRIORITY, id, legacy: true };
  }
  if (rest.length !== 3) {
    return `request subject "${subject}" must be ${prefix}.<tenant>.<priority>.<id> (or ${prefix}.<id>) with the id as one token (no '.')`;
  }
  const [tenant, priority, id] = rest as [string, string, string];
  const bad =
    tenantProblem(tenant) ?? (isPriority(priority) ? undefined : priorityProblem(priority));
  if (bad) return bad;
  return idProblem(id) ?? { tenant, priority: priority as Priority, id, legacy: false };
}

/** A message naming the accepted priorities. */
export function priorityProblem(p: string): string {
  return `priority "${p.slice(0, 40)}" must be one of ${PRIORITIES.join(", ")}`;
}
