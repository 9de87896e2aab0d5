/**
 * The lanes a configuration asks for, and the stream and consumer definitions that
 * serve them: the request stream's subjects list only the configured tenants (a
 * publish for any other is refused by the server at once), and the consumer in
 * streams/ is the template of one durable consumer per tenant and priority, with
 * disjoint filters. Requests on the plain `<prefix>.<id>` subject are served by the
 * `default` tenant's `normal` lane.
 */
import {
  DEFAULT_TENANT,
  LEGACY_PRIORITY,
  PRIORITIES,
  laneConsumer,
  laneFilter,
  legacyFilter,
  type Priority,
  type Tenants,
} from "../protocol/lanes.js";
import type { ConsumerDef, Definitions } from "./streams.js";

/** One lane: the consumer that serves a tenant's requests of one priority. */
export interface Lane {
  readonly tenant: string;
  readonly priority: Priority;
  readonly consumer: string;
  readonly filters: readonly string[];
  /** the lane's priority weight */
  readonly priorityWeight: number;
  /** the tenant's weight within its priority */
  readonly tenantWeight: number;
}

export interface LaneNames {
  /** the request stream, e.g. OPENAI_REQUESTS */
  readonly stream: string;
  /** the request subject prefix, e.g. openai.requests */
  readonly prefix: string;
  /** the consumer template's durable name, e.g. openai-proxy */
  readonly consumerBase: string;
  /** the stream capturing MAX_DELIVERIES advisories, e.g. OPENAI_POISON */
  readonly poisonStream: string;
}

/** Every lane of the configuration, highest priority first. */
export function lanesOf(
  tenants: Tenants,
  weights: Readonly<Record<Priority, { readonly weight: number }>>,
  n: Pick<LaneNames, "prefix" | "consumerBase">,
): Lane[] {
  const out: Lane[] = [];
  for (const priority of PRIORITIES) {
    for (const [tenant, t] of Object.entries(tenants)) {
      const filters = [laneFilter(n.prefix, tenant, priority)];
      if (tenant === DEFAULT_TENANT && priority === LEGACY_PRIORITY)
        filters.unshift(legacyFilter(n.prefix));
      out.push({
        tenant,
        priority,
        consumer: laneConsumer(n.consumerBase, tenant, priority),
        filters,
        priorityWeight: weights[priority].weight,
        tenantWeight: t.weight,
      });
    }
  }
  return out;
}

/**
 * The definitions with the request stream's subjects, the lane consumers (from the
 * template) and the poison stream's advisory subject derived from the lanes.
 */
export function deriveDefinitions(
  defs: Definitions,
  lanes: readonly Lane[],
  n: LaneNames,
  metadata: Record<string, string> = {},
): Definitions {
  const streams = defs.streams.map((s) => {
    if (s.name === n.stream)
      return {
        ...s,
        subjects: lanes.flatMap((l) => l.filters),
        metadata: { ...s.metadata, ...metadata },
      };
    if (s.name === n.poisonStream)
      return { ...s, subjects: [`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${n.stream}.*`] };
    return s;
  });
  const consumers: ConsumerDef[] = [];
  for (const c of defs.consumers) {
    if (c.stream_name !== n.stream || c.config.durable_name !== n.consumerBase) {
      consumers.push(c);
      continue;
    }
    const { filter_subject: _f, filter_subjects: _fs, ...template } = c.config;
    for (const l of lanes) {
      consumers.push({
        stream_name: c.stream_name,
        config: {
          ...template,
          durable_name: l.consumer,
          description: `nats-openai-proxy lane: tenant ${l.tenant}, priority ${l.priority}`,
          ...(l.filters.length === 1
            ? { filter_subject: l.filters[0] }
            : { filter_subjects: [...l.filters] }),
        },
      });
    }
  }
  return { streams, consumers };
}
