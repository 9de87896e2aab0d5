/**
 * HTTP-like error codes carried in `Nats-Service-Error-Code` (docs/protocol.md).
 */
export const Code = {
  badRequest: 400,
  unauthorized: 401,
  forbidden: 403,
  notFound: 404,
  expired: 408,
  conflict: 409,
  tooLarge: 413,
  unprocessable: 422,
  rateLimited: 429,
  internal: 500,
  badGateway: 502,
  unavailable: 503,
  gatewayTimeout: 504,
} as const;

/**
 * An error that belongs on the wire: its message says what to fix, and it never
 * contains secrets. Thrown by decoding and validation; the worker turns it into an
 * error reply, an error result and a dead letter.
 */
export class RequestError extends Error {
  override readonly name = "RequestError";
  constructor(
    readonly code: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
