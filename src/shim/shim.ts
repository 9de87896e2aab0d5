/**
 * The compat shim: the original tool's core subject (`openai_requests`), served by a
 * queue group. Each request is written into the work-queue stream with
 * Reply-To = the caller's inbox, so a worker crash means a late answer, not a lost one.
 */
import type { JetStreamClient, Msg, NatsConnection, Subscription } from "nats";
import { publishFailure } from "../nats/publish-errors.js";
import { Code } from "../protocol/codes.js";
import { H, JSON_TYPE } from "../protocol/headers.js";
import { encodeError } from "../protocol/result.js";
import { isValidId, newId, subjectFor } from "../protocol/subjects.js";
import { copyHeaders } from "../worker/outputs.js";
import type { Logger } from "../log.js";

export interface ShimOptions {
  subject: string;
  queue: string;
  stream: string;
  requestsPrefix: string;
  /** called for every request written or refused */
  onRequest?: (accepted: boolean, code?: number) => void;
}

/** Starts serving the compat subject. */
export function startShim(
  nc: NatsConnection,
  js: JetStreamClient,
  o: ShimOptions,
  log: Logger,
): Subscription {
  return nc.subscribe(o.subject, {
    queue: o.queue,
    callback: (err, m) => {
      if (err) {
        log.warn({ err }, "shim subscription error");
        return;
      }
      void forward(js, m, o, log);
    },
  });
}

async function forward(js: JetStreamClient, m: Msg, o: ShimOptions, log: Logger): Promise<void> {
  const given = m.headers?.get(H.msgId) ?? "";
  const id = given !== "" && isValidId(given) ? given : newId();
  const h = copyHeaders(m.headers);
  h.set(H.msgId, id);
  if (m.reply) h.set(H.replyTo, m.reply);
  const subject = subjectFor(o.requestsPrefix, id);
  const kind = (m.headers?.get(H.contentType) ?? "").startsWith(JSON_TYPE) ? "json" : "text";
  try {
    const pa = await js.publish(subject, m.data, { msgID: id, headers: h });
    if (pa.duplicate) {
      o.onRequest?.(false, Code.conflict);
      if (m.reply) {
        const e = encodeError(kind, {
          id,
          attempts: 0,
          code: Code.conflict,
          message: `duplicate: request id ${id} is already queued; its reply goes to the first caller; read it with "nats-openai-proxy result ${id} --wait"`,
        });
        m.respond(e.data, { headers: e.headers });
      }
      return;
    }
    o.onRequest?.(true);
  } catch (e) {
    const f = publishFailure(e, o.stream, subject);
    o.onRequest?.(false, f.code);
    log.warn({ id, code: f.code, reason: f.message }, "compat request refused");
    if (m.reply) {
      const r = encodeError(kind, { id, attempts: 0, code: f.code, message: f.message });
      m.respond(r.data, { headers: r.headers });
    }
  }
}
