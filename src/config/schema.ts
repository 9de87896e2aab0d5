/**
 * The configuration schema: every key, its type, default, environment variable and
 * whether it is a secret. `config/config.yaml` documents the same keys.
 */

import {
  DEFAULT_LANE_WEIGHTS,
  DEFAULT_TENANTS,
  type Priority,
  type Tenants,
} from "../protocol/lanes.js";

export type LeafType = "string" | "number" | "boolean" | "strings" | "limits" | "lanes" | "tenants";

export interface Leaf {
  type: LeafType;
  default: unknown;
  /** environment variables, first match wins */
  env?: string[];
  secret?: boolean;
  /** smallest allowed number */
  min?: number;
  /** allowed string values */
  oneOf?: string[];
}

const DEFAULT_LANES = Object.freeze({
  high: Object.freeze({ weight: DEFAULT_LANE_WEIGHTS.high }),
  normal: Object.freeze({ weight: DEFAULT_LANE_WEIGHTS.normal }),
  low: Object.freeze({ weight: DEFAULT_LANE_WEIGHTS.low }),
});

/** Dotted key → leaf. The order is the order of config/config.yaml. */
export const SCHEMA: Record<string, Leaf> = {
  "nats.server": { type: "strings", default: ["nats://127.0.0.1:4222"], env: ["NATS_URL"] },
  "nats.subject": { type: "string", default: "openai_requests", env: ["NATS_SUBJECT"] },
  "nats.nkey_seed_file": { type: "string", default: "", env: ["NATS_NKEY_SEED_FILE"] },
  "nats.creds_file": { type: "string", default: "", env: ["NATS_CREDS"] },
  "nats.tls.enabled": { type: "boolean", default: false },
  "nats.tls.cert": { type: "string", default: "", env: ["NATS_TLS_CERT"] },
  "nats.tls.key": { type: "string", default: "", env: ["NATS_TLS_KEY"] },
  "nats.tls.ca": { type: "string", default: "", env: ["NATS_TLS_CA"] },
  "nats.name": { type: "string", default: "nats-openai-proxy" },
  "nats.connect_timeout_ms": { type: "number", default: 5000, min: 100 },
  "openai.api_key": { type: "string", default: "", env: ["OPENAI_API_KEY"], secret: true },
  "openai.engine": { type: "string", default: "gpt-4o-mini", env: ["OPENAI_MODEL"] },
  "openai.base_url": { type: "string", default: "", env: ["OPENAI_BASE_URL"] },
  "openai.timeout_ms": { type: "number", default: 60000, min: 100 },
  "openai.stream_idle_timeout_ms": { type: "number", default: 30000, min: 100 },
  "openai.call_deadline_ms": { type: "number", default: 600000, min: 100 },
  "openai.transport": {
    type: "string",
    default: "node",
    oneOf: ["node", "fetch"],
    env: ["OPENAI_TRANSPORT"],
  },
  "openai.retries": { type: "number", default: 3, min: 0 },
  "openai.retry_min_ms": { type: "number", default: 500, min: 0 },
  "openai.retry_max_ms": { type: "number", default: 20000, min: 0 },
  "streams.dir": { type: "string", default: "streams", env: ["STREAMS_DIR"] },
  "streams.requests": { type: "string", default: "OPENAI_REQUESTS" },
  "streams.results": { type: "string", default: "OPENAI_RESULTS" },
  "streams.dlq": { type: "string", default: "OPENAI_DLQ" },
  "streams.batches": { type: "string", default: "OPENAI_BATCHES" },
  "streams.poison": { type: "string", default: "OPENAI_POISON" },
  "streams.poison_consumer": { type: "string", default: "openai-proxy-poison" },
  "streams.consumer": { type: "string", default: "openai-proxy" },
  "streams.requests_prefix": { type: "string", default: "openai.requests" },
  "streams.results_prefix": { type: "string", default: "openai.results" },
  "streams.dlq_prefix": { type: "string", default: "openai.dlq" },
  "streams.batches_prefix": { type: "string", default: "openai.batches" },
  "streams.streams": { type: "string", default: "OPENAI_STREAMS" },
  "streams.streams_prefix": { type: "string", default: "openai.streams" },
  "cache.bucket": { type: "string", default: "OPENAI_CACHE" },
  "cache.models": { type: "strings", default: [], env: ["PROXY_CACHE_MODELS"] },
  "cache.ttl_ms": { type: "number", default: 600000, min: 1000 },
  "cache.max_ttl_ms": { type: "number", default: 86400000, min: 1000 },
  "worker.concurrency": {
    type: "number",
    default: 64,
    min: 1,
    env: ["PROXY_CONCURRENCY"],
  },
  "worker.pull_expires_ms": { type: "number", default: 1000, min: 100 },
  "worker.nak_delay_ms": { type: "number", default: 2000, min: 0 },
  "worker.nak_delay_max_ms": { type: "number", default: 60000, min: 0 },
  "worker.shutdown_grace_ms": { type: "number", default: 20000, min: 0 },
  "worker.max_delivery_ms": { type: "number", default: 900000, min: 100 },
  "worker.breaker.window": { type: "number", default: 20, min: 1 },
  "worker.breaker.failure_ratio": { type: "number", default: 0.8, min: 0 },
  "worker.breaker.probe_interval_ms": { type: "number", default: 5000, min: 10 },
  "limits.models": { type: "limits", default: {}, env: ["PROXY_RATE_LIMITS"] },
  "limits.stream_prefix": { type: "string", default: "OPENAI_RATE" },
  "limits.subject_prefix": { type: "string", default: "openai.rate" },
  "limits.tenant_bucket": { type: "string", default: "OPENAI_TENANTS" },
  "limits.tenant_lease_ms": { type: "number", default: 30000, min: 1000 },
  "http.enabled": { type: "boolean", default: true },
  "http.host": { type: "string", default: "127.0.0.1", env: ["HTTP_HOST"] },
  "http.port": { type: "number", default: 9464, min: 0, env: ["HTTP_PORT"] },
  "http.token": { type: "string", default: "", env: ["HTTP_TOKEN"], secret: true },
  "log.level": {
    type: "string",
    default: "info",
    env: ["LOG_LEVEL"],
    oneOf: ["fatal", "error", "warn", "info", "debug", "trace", "silent"],
  },
  "log.pretty": { type: "boolean", default: false },
  lanes: { type: "lanes", default: DEFAULT_LANES, env: ["PROXY_LANES"] },
  tenants: { type: "tenants", default: DEFAULT_TENANTS, env: ["PROXY_TENANTS"] },
  "worker.lane_poll_ms": { type: "number", default: 100, min: 10 },
  "tracing.otlp_endpoint": { type: "string", default: "", env: ["OTEL_EXPORTER_OTLP_ENDPOINT"] },
  "tracing.service_name": {
    type: "string",
    default: "nats-openai-proxy",
    env: ["OTEL_SERVICE_NAME"],
  },
};

/** The typed, frozen configuration everything inside the process receives. */
export interface Config {
  readonly source: string;
  readonly nats: {
    readonly server: readonly string[];
    readonly subject: string;
    readonly nkey_seed_file: string;
    readonly creds_file: string;
    readonly tls: {
      readonly enabled: boolean;
      readonly cert: string;
      readonly key: string;
      readonly ca: string;
    };
    readonly name: string;
    readonly connect_timeout_ms: number;
  };
  readonly openai: {
    readonly api_key: string;
    readonly engine: string;
    readonly base_url: string;
    readonly timeout_ms: number;
    readonly stream_idle_timeout_ms: number;
    readonly call_deadline_ms: number;
    readonly transport: string;
    readonly retries: number;
    readonly retry_min_ms: number;
    readonly retry_max_ms: number;
  };
  readonly streams: {
    readonly dir: string;
    readonly requests: string;
    readonly results: string;
    readonly dlq: string;
    readonly batches: string;
    readonly poison: string;
    readonly poison_consumer: string;
    readonly consumer: string;
    readonly requests_prefix: string;
    readonly results_prefix: string;
    readonly dlq_prefix: string;
    readonly batches_prefix: string;
    /** streamed answers, kept for readers that resume (OPENAI_STREAMS) */
    readonly streams: string;
    readonly streams_prefix: string;
  };
  /** the response cache (Proxy-Cache header, cache.models) */
  readonly cache: {
    readonly bucket: string;
    /** models whose deterministic requests (temperature 0 or a seed) are cached */
    readonly models: readonly string[];
    /** how long cache.models caches an answer */
    readonly ttl_ms: number;
    /** the bucket's max_age: the longest any entry lives (a Proxy-Cache TTL is capped to it) */
    readonly max_ttl_ms: number;
  };
  readonly worker: {
    readonly concurrency: number;
    readonly pull_expires_ms: number;
    readonly nak_delay_ms: number;
    readonly nak_delay_max_ms: number;
    readonly shutdown_grace_ms: number;
    /** how often the lanes' queue depths are read while the proxy is busy */
    readonly lane_poll_ms: number;
    readonly max_delivery_ms: number;
    readonly breaker: {
      readonly window: number;
      readonly failure_ratio: number;
      readonly probe_interval_ms: number;
    };
  };
  readonly limits: {
    /** model → requests / tokens per minute, shared by all instances */
    readonly models: Readonly<Record<string, { readonly rpm?: number; readonly tpm?: number }>>;
    readonly stream_prefix: string;
    readonly subject_prefix: string;
    /** KV bucket holding each tenant's calls in flight per instance (max_concurrency) */
    readonly tenant_bucket: string;
    /** how long an instance's tenant slots outlive it (a crash) */
    readonly tenant_lease_ms: number;
  };
  readonly http: {
    readonly enabled: boolean;
    readonly host: string;
    readonly port: number;
    /** bearer token every /api call needs (a secret); required off loopback */
    readonly token: string;
  };
  /** OpenTelemetry export; off (and the SDK never loaded) while otlp_endpoint is empty */
  readonly tracing: { readonly otlp_endpoint: string; readonly service_name: string };
  readonly log: { readonly level: string; readonly pretty: boolean };
  /** priority → weight (share of the slots when every lane is backlogged) */
  readonly lanes: Readonly<Record<Priority, { readonly weight: number }>>;
  /** tenant → weight and limits; `default` is always there */
  readonly tenants: Tenants;
}
