/**
 * The compat shim: the original tool's core subject (`openai_requests`), served as a
 * NATS micro service endpoint (queue group, `$SRV.PING|INFO|STATS`). Each request is
 * written into the work-queue stream with Reply-To = the caller's inbox, so a worker
 * crash means a late answer, not a lost one.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Svcm, type ServiceMsg } from "@nats-io/services";
import { publishFailure } from "../nats/publish-errors.js";
import { Code } from "../protocol/codes.js";
import { H, isJsonType } from "../protocol/headers.js";
import { encodeError } from "../protocol/result.js";
import { isValidId, newId, replyToProblem } from "../protocol/subjects.js";
import { DEFAULT_TENANT, isPriority, laneSubject, priorityProblem } from "../protocol/lanes.js";
import type { TenantAdmission } from "../nats/tenants.js";
import { copyHeaders } from "../worker/outputs.js";
import { ensureTraceparent } from "../protocol/traceparent.js";
import type { Logger } from "../log.js";
import { VERSION } from "../version.js";

export interface ShimOptions {
  subject: string;
  queue: string;
  stream: string;
  requestsPrefix: string;
  /** called for every request written or refused */
  onRequest?: (accepted: boolean, code?: number) => void;
  /** prefixes a reply subject may not point into (the proxy's own subjects) */
  reservedPrefixes: readonly string[];
  /** extra data for `$SRV.STATS` */
  stats?: () => unknown;
  /** refuses unknown tenants and tenants past max_queued */
  admission?: TenantAdmission;
}

export interface Shim {
  stop(): Promise<void>;
}

/** Starts serving the compat subject as the `openai-proxy` micro service. */
export async function startShim(
  nc: NatsConnection,
  js: JetStreamClient,
  o: ShimOptions,
  log: Logger,
): Promise<Shim> {
  const srv = await new Svcm(nc).add({
    name: "openai-proxy",
    version: VERSION,
    description: "nats-openai-proxy: durable OpenAI-compatible chat completions on JetStream",
    queue: o.queue,
    metadata: { requests_stream: o.stream, requests_subject: `${o.requestsPrefix}.>` },
    statsHandler: () => Promise.resolve(o.stats?.() ?? null),
  });
  srv.addEndpoint("openai_requests", {
    subject: o.subject,
    queue: o.queue,
    metadata: {
      format: "text prompt or Chat Completions JSON; reply: assistant text or ChatCompletion JSON",
    },
    handler: (err: Error | null, m: ServiceMsg) => {
      if (err) {
        log.warn({ err }, "shim endpoint error");
        return;
      }
      void forward(js, m, o, log);
    },
  });
  // Callers may send as soon as startProxy resolves: make sure the server has the subscription.
  await nc.flush();
  return {
    stop: async () => {
      await srv.stop().catch(() => undefined);
    },
  };
}

async function forward(
  js: JetStreamClient,
  m: ServiceMsg,
  o: ShimOptions,
  log: Logger,
): Promise<void> {
  const given = m.headers?.get(H.msgId) ?? "";
  const id = given !== "" && isValidId(given) ? given : newId();
  const h = copyHeaders(m.headers);
  h.set(H.msgId, id);
  if (m.reply) h.set(H.replyTo, m.reply);
  ensureTraceparent(h);
  // Someone is waiting for the reply: high unless the caller says otherwise.
  const priority = m.headers?.get(H.priority) || "high";
  const tenant = m.headers?.get(H.tenant) || DEFAULT_TENANT;
  const kind = isJsonType(m.headers?.get(H.contentType) ?? "") ? "json" : "text";
  const refuse = (code: number, message: string) => {
    o.onRequest?.(false, code);
    if (!m.reply || replyToProblem(m.reply, o.reservedPrefixes)) return;
    const e = encodeError(kind, { id, attempts: 0, code, message });
    // The Nats-Service-Error headers as micro services send them, and the usual error body.
    m.respondError(code, message, e.data, { headers: e.headers });
  };
  if (!isPriority(priority)) {
    refuse(Code.badRequest, `Proxy-Priority: ${priorityProblem(priority)}`);
    return;
  }
  const subject = laneSubject(o.requestsPrefix, tenant, priority, id);
  try {
    const refused = await o.admission?.check(tenant);
    if (refused) {
      log.info({ id, tenant, code: refused.code }, "compat request refused");
      refuse(refused.code, refused.message);
      return;
    }
    const pa = await js.publish(subject, m.data, { msgID: id, headers: h });
    if (pa.duplicate) {
      refuse(
        Code.conflict,
        `duplicate: request id ${id} is already queued; its reply goes to the first caller; read it with "nats-openai-proxy result ${id} --wait"`,
      );
      return;
    }
    o.onRequest?.(true);
    o.admission?.accepted(tenant);
  } catch (e) {
    const f = publishFailure(e, o.stream, subject);
    log.warn({ id, code: f.code, reason: f.message }, "compat request refused");
    refuse(f.code, f.message);
  }
}
