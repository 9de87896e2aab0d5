/**
 * The operator page and its API, assembled from the proxy's parts: one call for main.ts.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { DeadLetters } from "../client/dlq.js";
import type { Config } from "../config/schema.js";
import type { Logger } from "../log.js";
import type { Lane } from "../nats/lanes.js";
import type { Worker } from "../worker/worker.js";
import type { Activity } from "./activity.js";
import { apiRoutes } from "./api.js";
import { readOverview } from "./overview.js";
import { pageRoutes } from "./page.js";
import type { Route } from "./server.js";

export interface OperatorParts {
  nc: NatsConnection;
  jsm: JetStreamManager;
  config: Config;
  lanes: readonly Lane[];
  worker: Worker;
  activity: Activity;
  log: Logger;
}

/** The routes of `/` and `/api` for startHttp. */
export function operatorRoutes(p: OperatorParts): Route[] {
  const s = p.config.streams;
  const dlq = new DeadLetters(p.nc, p.jsm, {
    dlqStream: s.dlq,
    dlqPrefix: s.dlq_prefix,
    requestsPrefix: s.requests_prefix,
  });
  const api = apiRoutes({
    dlq,
    token: p.config.http.token,
    log: p.log,
    secrets: [p.config.http.token, p.config.openai.api_key],
    overview: () =>
      readOverview({
        jsm: p.jsm,
        stream: s.requests,
        dlqStream: s.dlq,
        lanes: p.lanes,
        concurrency: p.config.worker.concurrency,
        worker: p.worker,
        activity: p.activity,
      }),
  });
  return [api, pageRoutes()];
}
