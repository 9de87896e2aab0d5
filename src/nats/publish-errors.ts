/**
 * What a refused JetStream publish means for the submitter, read from nats.js v3's
 * error classes (a full stream is a JetStreamApiError with err_code 10077; no stream
 * on the subject is "no responders").
 */
import { Code } from "../protocol/codes.js";
import { apiDescription, apiErrCode, isMaxPayload, isNoResponders, isTimeout } from "./errors.js";

export interface PublishFailure {
  code: number;
  message: string;
}

/** Classifies an error thrown by `js.publish` into a wire error with a helpful message. */
export function publishFailure(e: unknown, stream: string, subject: string): PublishFailure {
  const code = apiErrCode(e);
  const description = apiDescription(e);
  if (code === 10077 || /maximum (messages|bytes) exceeded/i.test(description ?? "")) {
    return {
      code: Code.unavailable,
      message: `queue full: ${stream} refused the request (${description ?? "limit reached"}); retry later`,
    };
  }
  if (code === 10054 || /message size exceeds/i.test(description ?? "")) {
    return {
      code: Code.tooLarge,
      message: `request too large: it exceeds ${stream}'s max_msg_size; send a smaller body`,
    };
  }
  if (isMaxPayload(e)) {
    return {
      code: Code.tooLarge,
      message: `request too large: it exceeds the NATS server's max_payload; send a smaller body`,
    };
  }
  if (isNoResponders(e)) {
    return {
      code: Code.unavailable,
      message: `no JetStream stream captures ${subject}: run "nats-openai-proxy streams apply" (or JetStream is unavailable)`,
    };
  }
  if (isTimeout(e)) {
    return {
      code: Code.unavailable,
      message: `JetStream did not acknowledge the request in time (${stream} unavailable); retry with the same id`,
    };
  }
  return {
    code: Code.unavailable,
    message: `${stream} refused the request: ${description ?? (e instanceof Error ? e.message : String(e))}`,
  };
}
