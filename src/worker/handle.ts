/**
 * One request's lifecycle, in a straight line:
 * decode → (redelivered? reuse a stored success) → call the API with retries →
 * store the result (PubAck) → reply → ack. Failures are classified once and end in
 * exactly one of: nak with a delay, dead letter + error reply + ack, or a requeue.
 */
import pRetry, { AbortError } from "p-retry";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Lane } from "../nats/lanes.js";
import {
  DEFAULT_TENANT,
  LEGACY_PRIORITY,
  parseRequestSubject,
  type Priority,
} from "../protocol/lanes.js";
import type { TenantGate } from "./tenant-gate.js";
import type { WorkMsg } from "./work-msg.js";
import { UpstreamError, type ChatClient, type ChatResult } from "../llm/chat-client.js";
import { Code, RequestError } from "../protocol/codes.js";
import { H, isJsonType, JSON_TYPE, STREAM_DELTA, STREAM_DONE } from "../protocol/headers.js";
import { decodeRequest, parseExpiresAt, type DecodedRequest } from "../protocol/request.js";
import { carryHeaders, encodeError, encodeSuccess, type Encoded } from "../protocol/result.js";
import { idFromSubject, replyToProblem } from "../protocol/subjects.js";
import type { Logger } from "../log.js";
import { backoffDelay, nakDelay } from "./backoff.js";
import type { CircuitBreaker } from "./breaker.js";
import { classify, Failure } from "./errors.js";
import type { Outputs } from "./outputs.js";
import { sleep } from "./sleep.js";
import type { RateLimiter } from "./ratelimit.js";
import type { Tracing } from "../tracing/tracing.js";

export interface HandleSettings {
  defaultModel: string;
  maxDeliver: number;
  ackWaitMs: number;
  retries: number;
  retryMinMs: number;
  retryMaxMs: number;
  nakDelayMs: number;
  nakDelayMaxMs: number;
  probeIntervalMs: number;
  /** the request subject prefix (a request lives at `<prefix>.<id>`) */
  requestsPrefix: string;
  /** subject prefixes a Reply-To may not point into (the proxy's own streams) */
  reservedPrefixes: readonly string[];
}

/** What became of one delivery; metrics and the per-request log line use it. */
export type Outcome =
  | "ok"
  | "replayed" // a stored success was re-sent
  | "error" // answered with an error and dead-lettered
  | "retry" // nak'ed for a later delivery
  | "paused" // breaker open or auth failure: nak'ed, no verdict
  | "requeued" // last delivery during an outage: re-queued fresh
  | "aborted"; // shutdown: nak'ed for another instance

export interface Finished {
  id: string;
  outcome: Outcome;
  tenant: string;
  priority: Priority;
  model: string;
  attempts: number;
  calls: number;
  queueWaitMs: number;
  upstreamMs: number;
  totalMs: number;
  code?: number;
  error?: string;
  promptTokens?: number;
  completionTokens?: number;
}

export interface HandleDeps {
  chat: ChatClient;
  out: Outputs;
  breaker: CircuitBreaker;
  settings: HandleSettings;
  log: Logger;
  /** aborted on shutdown's hard deadline */
  signal: AbortSignal;
  /** called for each retry of an upstream call */
  onRetry?: (f: Failure) => void;
  /** shared rate limits; waits before each upstream call */
  limiter?: RateLimiter;
  /** a nak delay past this process's outstanding pull requests (see puller.ts) */
  quietDelay?: () => number;
  /** the lane the message came from */
  lane?: Lane;
  /** per-tenant max_concurrency over all instances */
  tenantGate?: TenantGate;
  /** per-tenant requests and tokens per minute (keyed by tenant) */
  tenantLimiter?: RateLimiter;
  /** traceparent on the upstream call and the results; spans when exporting */
  tracing?: Tracing;
}

const enc = new TextEncoder();

/** Handles one delivery; never throws. */
export async function handleMessage(m: WorkMsg, deps: HandleDeps): Promise<Finished> {
  // A per-message signal relayed from the long-lived shutdown signal: the SDK adds an
  // abort listener per call and never removes it, and listeners piling up on one
  // long-lived signal leak memory and make every add slower (seen: 460 MB, 70 req/s
  // after 100k requests).
  const local = new AbortController();
  const relay = () => local.abort();
  deps.signal.addEventListener("abort", relay, { once: true });
  // Tracing decorates this delivery's upstream calls and outputs (nothing without a trace).
  const trace = deps.tracing?.begin(m);
  try {
    const traced = trace ? { chat: trace.chat(deps.chat), out: trace.out(deps.out) } : {};
    const f = await handleOne(m, { ...deps, ...traced, signal: local.signal });
    trace?.end(f);
    return f;
  } finally {
    deps.signal.removeEventListener("abort", relay);
  }
}

async function handleOne(m: WorkMsg, d: HandleDeps): Promise<Finished> {
  const started = Date.now();
  const id = idFromSubject(m.subject);
  const attempts = m.info.deliveryCount;
  const hdr = (k: string) => m.headers?.get(k) ?? "";
  let replyTo = hdr(H.replyTo);
  const s = d.settings;
  // Queue wait: from the stream's timestamp to now (first delivery) or to this delivery.
  const queueWaitMs = Math.max(0, started - Math.floor(m.info.timestampNanos / 1e6));
  let kind: "text" | "json" = isJsonType(hdr(H.contentType)) ? "json" : "text";
  let model = s.defaultModel;
  let upstreamMs = 0;
  let upstreamStart = 0;
  let calls = 0;
  let tenant = d.lane?.tenant ?? DEFAULT_TENANT;
  let priority: Priority = d.lane?.priority ?? LEGACY_PRIORITY;
  const fin = (outcome: Outcome, extra: Partial<Finished> = {}): Finished => ({
    id,
    outcome,
    tenant,
    priority,
    model,
    attempts,
    calls,
    queueWaitMs,
    upstreamMs,
    totalMs: Date.now() - started,
    ...extra,
  });
  // Long calls and retry waits must not let ack_wait expire.
  const keepAlive = setInterval(
    () => {
      try {
        m.working();
      } catch {
        // Connection closing: the message will simply be redelivered.
      }
    },
    Math.max(250, Math.floor(s.ackWaitMs / 3)),
  );
  try {
    // Reply-To first: no answer, not even an error, may go to a refused subject.
    const replyProblem = replyTo ? replyToProblem(replyTo, s.reservedPrefixes) : undefined;
    if (replyProblem) {
      replyTo = ""; // never publish there, not even the error
      throw new RequestError(Code.badRequest, replyProblem);
    }
    const address = parseRequestSubject(s.requestsPrefix, m.subject);
    if (typeof address === "string") throw new RequestError(Code.badRequest, address);
    tenant = address.tenant;
    priority = address.priority;
    const req = decodeRequest(m.data, hdr(H.contentType), s.defaultModel);
    kind = req.kind;
    model = req.params.model;
    if (m.redelivered) {
      const prev = await d.out.lookupResult(id);
      // Only this message's own success: a different message reusing the id must not
      // receive someone else's answer.
      if (
        prev &&
        prev.headers?.get(H.serviceErrorCode) === "" &&
        prev.headers.get(H.requestSeq) === String(m.seq)
      ) {
        if (replyTo) {
          d.out.reply(replyTo, { headers: prev.headers ?? natsHeaders(), data: prev.data });
          await d.out.flush();
        }
        m.ack();
        return fin("replayed");
      }
    }
    // After the stored-result check: a request answered before it expired keeps its answer.
    const expiresAt = parseExpiresAt(hdr(H.expiresAt));
    if (expiresAt !== undefined && Date.now() > expiresAt) {
      throw new RequestError(
        Code.expired,
        `request expired at ${new Date(expiresAt).toISOString()} (Expires-At) before a worker could call the API; resubmit with a later Expires-At`,
      );
    }
    const streaming = req.params.stream === true && replyTo !== "";
    upstreamStart = Date.now();
    const release = await d.tenantGate?.acquire(tenant, d.signal);
    let result: ChatResult;
    try {
      result = await callWithRetries(req, d, streaming ? replyTo : "", id, tenant, () => calls++);
    } finally {
      release?.();
    }
    upstreamMs = Date.now() - upstreamStart;
    const out = encodeSuccess(req.kind, result.completion, {
      id,
      attempts,
      upstreamRequestId: result.upstreamRequestId,
    });
    if (streaming) out.headers.set(H.stream, STREAM_DONE);
    out.headers.set(H.requestSeq, String(m.seq));
    carryHeaders(m.headers, out.headers);
    await d.out.storeResult(id, out);
    if (replyTo) {
      d.out.reply(replyTo, out);
      await d.out.flush();
    }
    m.ack();
    const u = result.completion.usage;
    return fin(
      "ok",
      u ? { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens } : {},
    );
  } catch (e) {
    const f = classify(e, model);
    if (upstreamStart > 0 && upstreamMs === 0) upstreamMs = Date.now() - upstreamStart;
    try {
      return await settleFailure(m, d, f, { id, kind, model, attempts, replyTo }, fin);
    } catch (e2) {
      // Could not write the verdict (NATS trouble): leave the message to redeliver.
      d.log.warn({ id, err: e2 }, "could not settle a failed request; it will be redelivered");
      try {
        m.nak(s.nakDelayMs);
      } catch {
        // Connection gone: ack_wait brings it back.
      }
      return fin("retry", { code: f.code, error: f.message });
    }
  } finally {
    clearInterval(keepAlive);
  }
}

interface Ctx {
  id: string;
  kind: "text" | "json";
  model: string;
  attempts: number;
  replyTo: string;
}

async function settleFailure(
  m: WorkMsg,
  d: HandleDeps,
  f: Failure,
  c: Ctx,
  fin: (o: Outcome, extra?: Partial<Finished>) => Finished,
): Promise<Finished> {
  const s = d.settings;
  const errInfo = { code: f.code, error: f.message };
  if (d.signal.aborted) {
    // Shutting down: hand it back for another instance, after our own pulls expired.
    m.nak(d.quietDelay?.() ?? 0);
    return fin("aborted", errInfo);
  }
  const verdict = async () => {
    const original = { headers: m.headers, data: m.data };
    // Dead letter first: if it cannot be stored, nothing is acked and nothing is lost.
    await d.out.deadLetter(c.id, `${c.id}.dlq.${m.seq}`, original, {
      code: f.code,
      message: f.message,
      attempts: c.attempts,
      subject: m.subject,
    });
    const err = encodeError(c.kind, {
      id: c.id,
      attempts: c.attempts,
      code: f.code,
      message: f.message,
      model: c.model,
    });
    carryHeaders(m.headers, err.headers);
    await d.out.storeResult(c.id, err);
    if (c.replyTo) {
      d.out.reply(c.replyTo, err);
      await d.out.flush();
    }
    m.ack();
    return fin("error", errInfo);
  };
  switch (f.kind) {
    case "permanent":
    case "expired":
    case "poison":
      return verdict();
    case "auth":
      d.breaker.open(f.message);
      return pause(m, d, c, Math.max(f.retryAfterMs ?? 0, s.probeIntervalMs), fin, errInfo);
    case "transient": {
      if (d.breaker.isOpen) return pause(m, d, c, s.probeIntervalMs, fin, errInfo);
      if (c.attempts >= s.maxDeliver) return verdict();
      const delay = Math.max(
        f.retryAfterMs ?? 0,
        nakDelay(c.attempts, s.nakDelayMs, s.nakDelayMaxMs),
      );
      m.nak(delay);
      return fin("retry", errInfo);
    }
  }
}

/**
 * No verdict while the API is down or refuses our key: nak with a delay. On the last
 * allowed delivery, re-queue a fresh copy instead, so an outage never exhausts
 * max_deliver and never fills the DLQ.
 */
async function pause(
  m: WorkMsg,
  d: HandleDeps,
  c: Ctx,
  delay: number,
  fin: (o: Outcome, extra?: Partial<Finished>) => Finished,
  errInfo: Partial<Finished>,
): Promise<Finished> {
  if (c.attempts >= d.settings.maxDeliver - 1) {
    await d.out.requeue(c.id, `${c.id}.requeue.${m.seq}`, { headers: m.headers, data: m.data });
    m.ack();
    return fin("requeued", errInfo);
  }
  m.nak(Math.max(delay, d.quietDelay?.() ?? 0));
  return fin("paused", errInfo);
}

async function callWithRetries(
  req: DecodedRequest,
  d: HandleDeps,
  streamTo: string,
  id: string,
  tenant: string,
  counted: () => void,
): Promise<ChatResult> {
  const s = d.settings;
  const onDelta = streamTo
    ? (chunk: unknown) => {
        const h = natsHeaders();
        h.set(H.stream, STREAM_DELTA);
        h.set(H.msgId, id);
        h.set(H.contentType, JSON_TYPE);
        d.out.reply(streamTo, {
          headers: h,
          data: enc.encode(JSON.stringify(chunk)),
        } satisfies Encoded);
      }
    : undefined;
  return pRetry(
    async () => {
      if (d.breaker.isOpen)
        throw new AbortError(
          new Failure("transient", Code.unavailable, `API unavailable: ${d.breaker.reason}`),
        );
      await d.limiter?.acquire(req.params.model, d.signal);
      await d.tenantLimiter?.acquire(tenant, d.signal);
      counted();
      try {
        const r = await d.chat.complete(req.params, {
          signal: d.signal,
          ...(onDelta ? { onDelta } : {}),
        });
        d.breaker.record(true);
        d.limiter?.observe(req.params.model, r.rateHeaders ?? {}, r.completion.usage?.total_tokens);
        d.tenantLimiter?.observe(tenant, {}, r.completion.usage?.total_tokens);
        return r;
      } catch (e) {
        if (e instanceof UpstreamError) d.limiter?.observe(req.params.model, e.headers);
        const f = classify(e, req.params.model);
        d.breaker.record(f.kind !== "transient" || d.signal.aborted);
        if (f.kind !== "transient" || d.signal.aborted) throw new AbortError(f);
        throw f;
      }
    },
    {
      retries: s.retries,
      minTimeout: 0,
      maxTimeout: 0,
      randomize: false,
      onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
        if (retriesLeft <= 0) return;
        const f = error as Failure;
        const delay = Math.max(
          f.retryAfterMs ?? 0,
          backoffDelay(attemptNumber, { minMs: s.retryMinMs, maxMs: s.retryMaxMs }),
        );
        // A wait longer than the in-process budget is better spent as a delayed nak,
        // freeing the slot for other work.
        if (delay > s.retryMaxMs) throw f;
        d.onRetry?.(f);
        await sleep(delay, d.signal);
        if (d.signal.aborted) throw f;
      },
    },
  ).catch((e: unknown) => {
    throw e instanceof AbortError ? e.originalError : e;
  });
}
