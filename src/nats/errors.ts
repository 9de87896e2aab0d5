/**
 * What a failed NATS / JetStream call means, read from nats.js v3's error classes in
 * one place, so that the rest of the code never matches strings.
 */
import { JetStreamApiError } from "@nats-io/jetstream";
import { errors, RequestError } from "@nats-io/transport-node";

/** JetStream API error code (`err_code`, e.g. 10077 "maximum messages exceeded"), if any. */
export function apiErrCode(e: unknown): number | undefined {
  return e instanceof JetStreamApiError ? e.code : undefined;
}

/** The JetStream API's description of the error, if any. */
export function apiDescription(e: unknown): string | undefined {
  return e instanceof JetStreamApiError ? e.apiError().description : undefined;
}

/**
 * A publish refused because the subject's last message is not the one expected
 * (`Nats-Expected-Last-Subject-Sequence`, 10071): somebody else wrote first.
 */
export function isWrongLastSequence(e: unknown): boolean {
  return apiErrCode(e) === 10071;
}

/** Stream or consumer not found (10059 / 10014). */
export function isMissing(e: unknown): boolean {
  const c = apiErrCode(e);
  return c === 10059 || c === 10014;
}

/** A request that got no answer in time (publish, API call, flush). */
export function isTimeout(e: unknown): boolean {
  if (e instanceof errors.TimeoutError) return true;
  return e instanceof RequestError && e.cause instanceof errors.TimeoutError;
}

/**
 * Nobody listens on the subject: for a JetStream publish, no stream captures it
 * (nats.js v3 reports that as JetStreamNotEnabled caused by "no responders").
 */
export function isNoResponders(e: unknown): boolean {
  if (e instanceof errors.NoRespondersError) return true;
  if (e instanceof RequestError) return e.isNoResponders();
  // nats.js v3 wraps it: JetStreamNotEnabled("jetstream is not enabled", { cause })
  return e instanceof Error && e.cause !== undefined && isNoResponders(e.cause);
}

/** The connection is closed, draining or reconnecting: the call may succeed later. */
export function isConnectionTrouble(e: unknown): boolean {
  return (
    e instanceof errors.ClosedConnectionError ||
    e instanceof errors.DrainingConnectionError ||
    e instanceof errors.ConnectionError
  );
}

/** A body above the server's max_payload, refused by the client before sending. */
export function isMaxPayload(e: unknown): boolean {
  return e instanceof errors.InvalidArgumentError && /max_payload/.test(e.message);
}

/** A header nats.js cannot encode (a value with CR or LF, a name with invalid characters). */
export function isHeaderEncoding(e: unknown): boolean {
  return e instanceof errors.InvalidArgumentError && /header/.test(e.message);
}

/** A server-side "no message found" for a delete of a message that is already gone. */
export function isAlreadyGone(e: unknown): boolean {
  const c = apiErrCode(e);
  return c === 10057 || c === 10037;
}
