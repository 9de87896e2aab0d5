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
  attempts: "Proxy-Attempts",
  failedAt: "Proxy-Failed-At",
  batchId: "Proxy-Batch-Id",
  customId: "Proxy-Custom-Id",
  replayOf: "Proxy-Replay-Of",
  requestSeq: "Proxy-Request-Seq",
  /** on a dead letter: the subject the request was queued on (replay restores it) */
  requestSubject: "Proxy-Request-Subject",
  priority: "Proxy-Priority",
  tenant: "Proxy-Tenant",
  /** W3C Trace Context, as on HTTP (docs/operations.md#tracing) */
  traceparent: "traceparent",
  tracestate: "tracestate",
  serviceError: "Nats-Service-Error",
  serviceErrorCode: "Nats-Service-Error-Code",
} as const;

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
