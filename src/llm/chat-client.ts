/**
 * The narrow interface the worker uses to call a Chat Completions API. It knows
 * nothing of NATS; the worker knows nothing of the SDK.
 */
import type { ChatParams } from "../protocol/request.js";
import type { CompletionLike } from "../protocol/result.js";

export interface ChatResult {
  completion: CompletionLike;
  /** the API's `x-request-id` */
  upstreamRequestId?: string | undefined;
  /** the API's x-ratelimit-* headers (lower-case keys) */
  rateHeaders?: Readonly<Record<string, string>>;
}

export interface ChatCallOptions {
  signal?: AbortSignal;
  /** streaming: called with each chunk as it arrives */
  onDelta?: (chunk: unknown) => void;
  /** extra HTTP headers of the call (traceparent, tracestate) */
  headers?: Readonly<Record<string, string>>;
}

export interface ChatClient {
  /** One call, no retries (the worker owns the retry policy). Throws `UpstreamError`. */
  complete(params: ChatParams, opts?: ChatCallOptions): Promise<ChatResult>;
  /** A cheap call that succeeds only when the API is reachable and accepts the key. */
  probe(signal?: AbortSignal): Promise<void>;
}

/**
 * A failed upstream call, SDK-independent. `status` is the HTTP status (undefined
 * for connection failures and timeouts); `headers` carry Retry-After and the
 * x-ratelimit-* family.
 */
export class UpstreamError extends Error {
  override readonly name = "UpstreamError";
  constructor(
    message: string,
    readonly kind: "http" | "connection" | "timeout" | "aborted",
    readonly status: number | undefined,
    readonly headers: Readonly<Record<string, string>>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
