/**
 * What `GET /api/overview` answers: the lanes' queue depths (the same numbers as
 * `streams info`, read by laneDepths), this process's in-flight count and breaker, the
 * dead-letter count and the last 15 minutes of activity.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { laneDepths, type LaneDepth } from "../nats/depths.js";
import type { Lane } from "../nats/lanes.js";
import type { BreakerState } from "../worker/breaker.js";
import type { WorkerState } from "../worker/worker.js";
import type { Activity, ActivitySnapshot } from "./activity.js";
import { VERSION } from "../version.js";

export interface Overview {
  version: string;
  /** epoch ms when this was read */
  time: number;
  stream: string;
  lanes: LaneDepth[];
  /** sums over the lanes */
  queue: { pending: number; ackPending: number };
  /** this process */
  worker: { state: WorkerState; inFlight: number; concurrency: number; breaker: BreakerState };
  dlq: { stream: string; messages: number };
  activity: ActivitySnapshot;
}

export interface OverviewSources {
  jsm: JetStreamManager;
  stream: string;
  dlqStream: string;
  lanes: readonly Lane[];
  concurrency: number;
  worker: {
    readonly state: WorkerState;
    readonly inFlight: number;
    readonly breakerState: BreakerState;
  };
  activity: Activity;
}

/** Reads the overview now (two JetStream API calls). */
export async function readOverview(s: OverviewSources): Promise<Overview> {
  const [lanes, dlq] = await Promise.all([
    laneDepths(s.jsm, s.stream, s.lanes),
    s.jsm.streams.info(s.dlqStream),
  ]);
  return {
    version: VERSION,
    time: Date.now(),
    stream: s.stream,
    lanes,
    queue: {
      pending: lanes.reduce((n, l) => n + l.pending, 0),
      ackPending: lanes.reduce((n, l) => n + l.ackPending, 0),
    },
    worker: {
      state: s.worker.state,
      inFlight: s.worker.inFlight,
      concurrency: s.concurrency,
      breaker: s.worker.breakerState,
    },
    dlq: { stream: s.dlqStream, messages: dlq.state.messages },
    activity: s.activity.snapshot(),
  };
}
