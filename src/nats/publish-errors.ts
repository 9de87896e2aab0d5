/**
 * What a refused JetStream publish means for the submitter. The reason of a full
 * stream hides in `api_error` (err.message is just "503").
 */
import { Code } from "../protocol/codes.js";

export interface PublishFailure {
  code: number;
  message: string;
}

/** Classifies an error thrown by `js.publish` into a wire error with a helpful message. */
export function publishFailure(e: unknown, stream: string, subject: string): PublishFailure {
  const err = e as {
    code?: string;
    message?: string;
    api_error?: { err_code?: number; description?: string };
  };
  const api = err.api_error;
  if (
    api?.err_code === 10077 ||
    /maximum (messages|bytes) exceeded/i.test(api?.description ?? "")
  ) {
    return {
      code: Code.unavailable,
      message: `queue full: ${stream} refused the request (${api?.description ?? "limit reached"}); retry later`,
    };
  }
  if (
    api?.err_code === 10054 ||
    /message size exceeds/i.test(api?.description ?? err.message ?? "")
  ) {
    return {
      code: Code.tooLarge,
      message: `request too large: it exceeds ${stream}'s max_msg_size; send a smaller body`,
    };
  }
  if (err.code === "MAX_PAYLOAD_EXCEEDED") {
    return {
      code: Code.tooLarge,
      message: `request too large: it exceeds the NATS server's max_payload; send a smaller body`,
    };
  }
  if (err.code === "503" && !api) {
    return {
      code: Code.unavailable,
      message: `no JetStream stream captures ${subject}: run "nats-openai-proxy streams apply" (or JetStream is unavailable)`,
    };
  }
  if (err.code === "TIMEOUT") {
    return {
      code: Code.unavailable,
      message: `JetStream did not acknowledge the request in time (${stream} unavailable); retry with the same id`,
    };
  }
  return {
    code: Code.unavailable,
    message: `${stream} refused the request: ${api?.description ?? err.message ?? String(e)}`,
  };
}
