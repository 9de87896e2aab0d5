/**
 * Header names of the wire contract (docs/protocol.md). nats.js header lookups are
 * case-sensitive, so every module uses these exact spellings.
 */
export const H = {
  msgId: "Nats-Msg-Id",
  replyTo: "Reply-To",
  expiresAt: "Expires-At",
  contentType: "Content-Type",
  model: "Openai-Model",
  requestId: "Openai-Request-Id",
  usage: "Openai-Usage",
  stream: "Openai-Stream",
  /** on a streamed delta: its number within the attempt (1, 2, …), live copy and stored copy alike */
  streamSeq: "Openai-Stream-Seq",
  /** on a request: cache the answer for this long; on a reply: `hit` or `miss` */
  cache: "Proxy-Cache",
  attempts: "Proxy-Attempts",
  failedAt: "Proxy-Failed-At",
  batchId: "Proxy-Batch-Id",
  customId: "Proxy-Custom-Id",
  replayOf: "Proxy-Replay-Of",
  requestSeq: "Proxy-Request-Seq",
  /** on a dead letter: the subject the request was queued on (replay restores it) */
  requestSubject: "Proxy-Request-Subject",
  /** on a dead letter kept without its body (it would not fit): the body's size in bytes */
  bodyOmitted: "Proxy-Body-Omitted",
  priority: "Proxy-Priority",
  tenant: "Proxy-Tenant",
  /** W3C Trace Context, as on HTTP (docs/operations.md#tracing) */
  traceparent: "traceparent",
  tracestate: "tracestate",
  serviceError: "Nats-Service-Error",
  serviceErrorCode: "Nats-Service-Error-Code",
} as const;

/**
 * The request headers a client may set that the proxy carries whenever it copies a
 * request: into a dead letter, a re-queued or replayed copy, and the compat shim's write
 * into the stream. Nothing else is copied, above all no `Nats-*` header: the server acts
 * on those at every publish (`Nats-Expected-Stream`, `Nats-Expected-Last-Sequence`,
 * `Nats-TTL`, `Nats-Rollup`, …), so a client's value would make the proxy's own writes
 * fail or misbehave. The proxy sets `Nats-Msg-Id` itself where one is needed. Names
 * match exactly (nats.js header lookups are case-sensitive, and so is the proxy).
 */
export const CLIENT_HEADERS: readonly string[] = Object.freeze([
  H.contentType,
  H.replyTo,
  H.expiresAt,
  H.batchId,
  H.customId,
  H.replayOf,
  "Proxy-Priority",
  "Proxy-Tenant",
  "Proxy-Cache",
  "traceparent",
  "tracestate",
]);

/** Content types used on requests and results. */
export const JSON_TYPE = "application/json";
export const TEXT_TYPE = "text/plain; charset=utf-8";

/** True for a JSON content type (case-insensitive, parameters allowed). */
export function isJsonType(contentType: string): boolean {
  return contentType.trim().toLowerCase().startsWith(JSON_TYPE);
}

/** Values of the `Openai-Stream` header. */
export const STREAM_DELTA = "delta";
export const STREAM_DONE = "done";
/** Opens a redelivered attempt: readers drop what the failed attempt sent. */
export const STREAM_RESTART = "restart";
