/**
 * The error taxonomy: every failure is classified once, here, and the worker decides
 * from the class, never from a message string.
 */
import { Code, RequestError } from "../protocol/codes.js";
import { UpstreamError } from "../llm/chat-client.js";
import { isHeaderEncoding, isMaxPayload } from "../nats/errors.js";
import { requestedDelay } from "./backoff.js";

/**
 * - `transient`: may succeed later (network, timeouts, 408, 409, 429, 5xx): retry.
 * - `permanent`: will never succeed as sent (400, 404, 413, 422, bad input): dead-letter.
 * - `auth`: the proxy's credentials are refused (401/403): pause, never dead-letter.
 * - `expired`: the request's Expires-At has passed: dead-letter with 408.
 * - `poison`: the request crashed workers until max_deliver: dead-letter.
 * - `infra`: the proxy's own machinery failed (the rate limiter, NATS writes), not the
 *   request nor the API: pause (nak with a delay, re-queue on the last delivery), never
 *   a verdict.
 */
export type FailureKind = "transient" | "permanent" | "auth" | "expired" | "poison" | "infra";

export class Failure extends Error {
  override readonly name = "Failure";
  constructor(
    readonly kind: FailureKind,
    readonly code: number,
    message: string,
    /** the delay the API asked for, if any */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const TRANSIENT_STATUS = new Set([408, 409, 429]);

/** Classifies anything thrown while handling a request. */
export function classify(e: unknown, model?: string): Failure {
  if (e instanceof Failure) return e;
  if (e instanceof RequestError) {
    const kind = e.code === Code.expired ? "expired" : "permanent";
    return new Failure(kind, e.code, e.message, undefined, { cause: e });
  }
  if (e instanceof UpstreamError) return classifyUpstream(e, model);
  const msg = e instanceof Error ? e.message : String(e);
  // What NATS cannot carry will never be carried: retrying would only call the API again.
  if (isMaxPayload(e)) {
    const what = `a message is larger than the NATS server's max_payload (${msg}): ask for a shorter answer (max_tokens) or raise max_payload`;
    return new Failure("permanent", Code.tooLarge, what, undefined, { cause: e });
  }
  if (isHeaderEncoding(e)) {
    const what = `a header of this request cannot be encoded (${msg}): remove line breaks and control characters`;
    return new Failure("permanent", Code.badRequest, what, undefined, { cause: e });
  }
  return new Failure("transient", Code.internal, `internal error: ${msg}`, undefined, { cause: e });
}

function classifyUpstream(e: UpstreamError, model: string | undefined): Failure {
  const opts = { cause: e };
  switch (e.kind) {
    case "timeout":
      return new Failure("transient", Code.gatewayTimeout, e.message, undefined, opts);
    case "connection":
      return new Failure("transient", Code.badGateway, e.message, undefined, opts);
    case "aborted":
      return new Failure("transient", Code.unavailable, e.message, undefined, opts);
    case "http":
      break;
  }
  const status = e.status ?? 500;
  const delay = requestedDelay(e.headers);
  if (status === 401 || status === 403) {
    return new Failure(
      "auth",
      status,
      `the API refused the proxy's credentials (${status}): check openai.api_key / OPENAI_API_KEY — ${e.message}`,
      delay,
      opts,
    );
  }
  if (status === 404) {
    const what = model ? `model "${model}" not found or not accessible` : "not found";
    return new Failure("permanent", Code.notFound, `${what}: ${e.message}`, undefined, opts);
  }
  if (TRANSIENT_STATUS.has(status) || status >= 500) {
    // 408 and 409 from upstream are answered as gateway errors: on the wire 408 means
    // "the request's Expires-At passed" and 409 "duplicate id" (docs/protocol.md).
    const code = status === 408 ? Code.gatewayTimeout : status === 409 ? Code.badGateway : status;
    return new Failure("transient", code, `upstream ${status}: ${e.message}`, delay, opts);
  }
  const code = status === 413 || status === 422 || status === 400 ? status : Code.badRequest;
  return new Failure("permanent", code, `upstream ${status}: ${e.message}`, undefined, opts);
}
