/**
 * Queue depth per lane (tenant × priority), read from the lane consumers in one
 * consumer-list request: what `streams info`, the metrics and the operator page show.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import type { Priority } from "../protocol/lanes.js";
import type { Lane } from "./lanes.js";

export interface LaneDepth {
  tenant: string;
  priority: Priority;
  consumer: string;
  /** waiting to be delivered */
  pending: number;
  /** delivered and not yet acknowledged (in flight, or waiting for a redelivery) */
  ackPending: number;
  redelivered: number;
  /** false when the lane's consumer does not exist */
  present: boolean;
}

/** The depth of every lane, in the lanes' order. */
export async function laneDepths(
  jsm: JetStreamManager,
  stream: string,
  lanes: readonly Lane[],
): Promise<LaneDepth[]> {
  const infos = new Map<string, { p: number; a: number; r: number }>();
  const lister = jsm.consumers.list(stream);
  for await (const ci of lister)
    infos.set(ci.name, { p: ci.num_pending, a: ci.num_ack_pending, r: ci.num_redelivered });
  return lanes.map((l) => {
    const i = infos.get(l.consumer);
    return {
      tenant: l.tenant,
      priority: l.priority,
      consumer: l.consumer,
      pending: i?.p ?? 0,
      ackPending: i?.a ?? 0,
      redelivered: i?.r ?? 0,
      present: i !== undefined,
    };
  });
}

/** A plain text table of the depths. */
export function laneTable(d: readonly LaneDepth[]): string {
  const rows = [["tenant", "priority", "pending", "in flight", "redelivered", "consumer"]];
  for (const x of d)
    rows.push([
      x.tenant,
      x.priority,
      String(x.pending),
      String(x.ackPending),
      String(x.redelivered),
      x.present ? x.consumer : `${x.consumer} (missing: run streams apply)`,
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return (
    rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join("  ")}`.trimEnd()).join("\n") +
    "\n"
  );
}
