/**
 * The JSON the page reads from /api (src/http/overview.ts and src/http/api.ts answer it;
 * test/integration/operator-api.test.ts checks at compile time that the two agree).
 */

export type Priority = "high" | "normal" | "low";

export interface LaneDepth {
  tenant: string;
  priority: Priority;
  consumer: string;
  pending: number;
  ackPending: number;
  redelivered: number;
  present: boolean;
}

export interface ActivityBucket {
  t: number;
  completed: number;
  errors: number;
  other: number;
  p50?: number;
  p95?: number;
  upstreamP50?: number;
  upstreamP95?: number;
}

export interface Overview {
  version: string;
  time: number;
  stream: string;
  lanes: LaneDepth[];
  queue: { pending: number; ackPending: number };
  worker: {
    state: string;
    inFlight: number;
    concurrency: number;
    breaker: "closed" | "open";
  };
  dlq: { stream: string; messages: number };
  activity: {
    bucketMs: number;
    buckets: ActivityBucket[];
    total: { completed: number; errors: number; p50?: number; p95?: number };
  };
}

export interface DeadLetterView {
  id: string;
  seq: number;
  tenant: string;
  priority: string;
  code: number;
  error: string;
  attempts: number;
  failedAt: string;
}

export interface DlqPageView {
  items: DeadLetterView[];
  next?: number;
}
