/**
 * Composition root: builds the proxy from a configuration, starts it, stops it.
 * It wires modules together and does nothing else.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { ConfigError } from "./config/load.js";
import type { Config } from "./config/schema.js";
import { startHttp, type HttpServer } from "./http/server.js";
import { createMetrics, type Metrics } from "./http/metrics.js";
import type { ChatClient } from "./llm/chat-client.js";
import { createOpenAIClient } from "./llm/openai-client.js";
import { createNodeFetch } from "./llm/node-fetch.js";
import type { Logger } from "./log.js";
import { checkServer, connectNats } from "./nats/connect.js";
import { definitionsFor } from "./nats/definitions.js";
import { laneDepths } from "./nats/depths.js";
import { applyDefinitions, formatReport } from "./nats/streams.js";
import { createTenantGate } from "./worker/tenant-gate.js";
import { tenantAdmission } from "./nats/tenants.js";
import { startShim } from "./shim/shim.js";
import { natsOutputs, type Outputs } from "./worker/outputs.js";
import { createWorker, type Worker } from "./worker/worker.js";
import type { WorkMsg } from "./worker/work-msg.js";
import { createRateLimiter } from "./worker/ratelimit.js";
import { createResponseCache } from "./worker/cache.js";
import { jetStreamStore, type StreamStore } from "./worker/stream-log.js";
import { existsSync } from "node:fs";
import { createActivity, observeActivity } from "./http/activity.js";
import { checkHttpExposure } from "./http/guard.js";
import { operatorRoutes } from "./http/operator.js";
import { createTracing } from "./tracing/tracing.js";

export interface Proxy {
  readonly nc: NatsConnection;
  readonly worker: Worker;
  readonly metrics: Metrics;
  readonly http: HttpServer | undefined;
  /** Graceful stop (idempotent): shim off, worker drained, connection drained. */
  stop(graceMs?: number): Promise<void>;
}

export interface ProxyDeps {
  /** a ChatClient to use instead of the SDK one (tests) */
  chat?: ChatClient;
  /** wraps the NATS outputs (tests inject failpoints here) */
  wrapOutputs?: (o: Outputs) => Outputs;
  /** wraps the store of streamed deltas into OPENAI_STREAMS (tests inject failpoints here) */
  wrapStreamStore?: (s: StreamStore) => StreamStore;
  /** wraps each delivered work message (tests inject failpoints here: lost acks) */
  wrapMessage?: (m: WorkMsg) => WorkMsg;
}

/** Connects, makes sure the streams exist, and starts worker, shim and HTTP. */
export async function startProxy(
  config: Config,
  log: Logger,
  deps: ProxyDeps = {},
): Promise<Proxy> {
  const o = config.openai;
  if (!deps.chat && o.api_key === "" && o.base_url === "") {
    throw new ConfigError(
      "no API key: set OPENAI_API_KEY (or openai.api_key), or openai.base_url / OPENAI_BASE_URL to an OpenAI-compatible server",
    );
  }
  checkHttpExposure(config.http);
  const nc = await connectNats(config.nats, log);
  try {
    const server = checkServer(nc);
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const s = config.streams;
    const { defs, lanes } = definitionsFor(config);
    if (existsSync(s.dir)) {
      // Create what is missing and add new tenants' subjects; never change anything
      // else of a live stream from here (that is `streams apply`).
      const reports = await applyDefinitions(jsm, defs, { createOnly: true });
      for (const r of reports) {
        if (r.action === "outdated")
          log.warn(
            `${formatReport(r)}: run "nats-openai-proxy streams apply" with this configuration`,
          );
        else if (r.action !== "unchanged") log.info(formatReport(r));
      }
    }
    // Permit streams and the tenant bucket are replicated like the queue they guard.
    const replicas = (await jsm.streams.info(s.requests)).config.num_replicas;
    const chat =
      deps.chat ??
      createOpenAIClient({
        apiKey: o.api_key,
        baseURL: o.base_url || undefined,
        timeoutMs: o.timeout_ms,
        streamIdleTimeoutMs: o.stream_idle_timeout_ms,
        callDeadlineMs: o.call_deadline_ms,
        ...(o.transport === "node" ? { fetch: createNodeFetch() } : {}),
      });
    const metrics = createMetrics(Object.keys(config.tenants));
    const activity = createActivity();
    metrics.setDlqSize(async () => (await jsm.streams.info(s.dlq)).state.messages);
    metrics.setLaneDepths(() => laneDepths(jsm, s.requests, lanes));
    const natsOut = natsOutputs(nc, js, jsm, {
      results: s.results,
      dlq: s.dlq,
      resultsPrefix: s.results_prefix,
      dlqPrefix: s.dlq_prefix,
      requestsPrefix: s.requests_prefix,
    });
    const out = deps.wrapOutputs ? deps.wrapOutputs(natsOut) : natsOut;
    const w = config.worker;
    // Replies never go into the proxy's own subjects (they would forge results, dead
    // letters or requests) — see replyToProblem.
    const reservedPrefixes = [
      s.requests_prefix,
      s.results_prefix,
      s.dlq_prefix,
      s.batches_prefix,
      s.streams_prefix,
      config.limits.subject_prefix,
      config.nats.subject,
    ];
    const limiter = createRateLimiter(
      nc,
      js,
      jsm,
      {
        limits: config.limits.models,
        streamPrefix: config.limits.stream_prefix,
        subjectPrefix: config.limits.subject_prefix,
        replicas,
      },
      log,
    );
    // The gate is built before the worker it wakes.
    const wake: { worker?: Worker } = {};
    const tenantGate = await createTenantGate(
      nc,
      config.tenants,
      {
        bucket: config.limits.tenant_bucket,
        leaseMs: config.limits.tenant_lease_ms,
        replicas,
        onChange: () => wake.worker?.kick(),
      },
      log,
    );
    const tenantRates = Object.fromEntries(
      Object.entries(config.tenants)
        .filter(([, t]) => t.rpm !== undefined || t.tpm !== undefined)
        .map(([name, t]) => [
          name,
          { ...(t.rpm ? { rpm: t.rpm } : {}), ...(t.tpm ? { tpm: t.tpm } : {}) },
        ]),
    );
    const tenantLimiter = createRateLimiter(
      nc,
      js,
      jsm,
      {
        limits: tenantRates,
        streamPrefix: `${config.limits.stream_prefix}_TENANT`,
        subjectPrefix: `${config.limits.subject_prefix}.tenant`,
        replicas,
      },
      log,
    );
    const tracing = await createTracing({
      endpoint: config.tracing.otlp_endpoint,
      serviceName: config.tracing.service_name,
      log,
    });
    const worker = createWorker({
      nc,
      js,
      jsm,
      chat,
      out,
      log,
      observer: observeActivity(metrics, activity),
      stream: s.requests,
      lanes,
      concurrency: w.concurrency,
      pullExpiresMs: w.pull_expires_ms,
      lanePollMs: w.lane_poll_ms,
      tenantGate,
      tenantLimiter,
      poisonStream: s.poison,
      poisonConsumer: s.poison_consumer,
      limiter,
      streamLog: {
        store: deps.wrapStreamStore ? deps.wrapStreamStore(jetStreamStore(js)) : jetStreamStore(js),
        prefix: s.streams_prefix,
      },
      // The bucket is made the first time a request asks for the cache.
      cache: createResponseCache(
        nc,
        {
          bucket: config.cache.bucket,
          models: config.cache.models,
          ttlMs: config.cache.ttl_ms,
          maxTtlMs: config.cache.max_ttl_ms,
          replicas,
          messageTtl: server.messageTtl,
          observer: metrics,
        },
        log,
      ),
      tracing,
      ...(deps.wrapMessage ? { wrapMessage: deps.wrapMessage } : {}),
      breaker: {
        window: w.breaker.window,
        failureRatio: w.breaker.failure_ratio,
        probeIntervalMs: w.breaker.probe_interval_ms,
      },
      settings: {
        defaultModel: o.engine,
        retries: o.retries,
        retryMinMs: o.retry_min_ms,
        retryMaxMs: o.retry_max_ms,
        nakDelayMs: w.nak_delay_ms,
        nakDelayMaxMs: w.nak_delay_max_ms,
        maxDeliveryMs: w.max_delivery_ms,
        requestsPrefix: s.requests_prefix,
        reservedPrefixes,
      },
    });
    wake.worker = worker;
    await worker.start();
    const shim = await startShim(
      nc,
      js,
      {
        subject: config.nats.subject,
        queue: s.consumer,
        stream: s.requests,
        requestsPrefix: s.requests_prefix,
        onRequest: (a, c) => metrics.shim(a, c),
        reservedPrefixes,
        admission: tenantAdmission(jsm, {
          stream: s.requests,
          tenants: config.tenants,
          consumerBase: s.consumer,
        }),
        stats: () => ({
          in_flight: worker.inFlight,
          breaker: worker.breakerState,
          state: worker.state,
        }),
      },
      log,
    );

    let connected = true;
    void (async () => {
      for await (const st of nc.status()) {
        if (String(st.type) === "disconnect") connected = false;
        if (String(st.type) === "reconnect") connected = true;
      }
    })();
    const http = config.http.enabled
      ? await startHttp(config.http.host, config.http.port, metrics.registry, {
          ready: () => {
            const checks = {
              nats: connected && !nc.isClosed(),
              consumer: worker.state === "RUNNING",
              breaker_closed: worker.breakerState === "closed",
            };
            return { ready: Object.values(checks).every(Boolean), checks };
          },
          routes: operatorRoutes({ nc, jsm, config, lanes, worker, activity, log }),
        })
      : undefined;
    log.info(
      {
        subject: config.nats.subject,
        stream: s.requests,
        model: o.engine,
        upstream: o.base_url || "https://api.openai.com/v1",
        http: http ? `http://${config.http.host}:${http.port}` : "off",
        nats_server: server.version,
        server_features: {
          consumer_pause: server.consumerPause,
          message_ttl: server.messageTtl,
        },
      },
      "nats-openai-proxy serving",
    );

    let stopping: Promise<void> | undefined;
    return {
      nc,
      worker,
      metrics,
      http,
      stop(graceMs = w.shutdown_grace_ms) {
        stopping ??= (async () => {
          await shim.stop();
          await worker.stop(graceMs);
          limiter.close();
          tenantLimiter.close();
          tenantGate.close();
          await nc.drain().catch(() => undefined);
          await http?.close();
          await tracing.shutdown();
          log.info("stopped");
        })();
        return stopping;
      },
    };
  } catch (e) {
    await nc.close().catch(() => undefined);
    throw e;
  }
}
