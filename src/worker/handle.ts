/**
 * One request's lifecycle, in a straight line:
 * decode → (redelivered? reuse a stored success) → call the API with retries →
 * store the result (PubAck) → reply → ack. Failures are classified once and end in
 * exactly one of: nak with a delay, dead letter + error reply + ack, or a requeue.
 */
import pRetry, { AbortError } from "p-retry";
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
import { H, isJsonType, STREAM_DONE } from "../protocol/headers.js";
import { decodeRequest, parseExpiresAt, type DecodedRequest } from "../protocol/request.js";
import {
  carryHeaders,
  encodeError,
  encodeSuccess,
  isSuccessOf,
  type CompletionLike,
  type Encoded,
} from "../protocol/result.js";
import { idFromSubject, replyToProblem } from "../protocol/subjects.js";
import type { Logger } from "../log.js";
import { backoffDelay, nakDelay } from "./backoff.js";
import type { CircuitBreaker } from "./breaker.js";
import { classify, Failure } from "./errors.js";
import { isWrongLastSequence } from "../nats/errors.js";
import { asEncoded, deadLetterKey, type Outputs } from "./outputs.js";
import { sleep } from "./sleep.js";
import type { RateLimiter } from "./ratelimit.js";
import type { ResponseCache } from "./cache.js";
import { openStreamAttempt, type StreamAttempt, type StreamStore } from "./stream-log.js";
import { completionChunks } from "../protocol/stream.js";
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
  /** the longest one delivery may keep its message alive with working() */
  maxDeliveryMs: number;
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
  /** streamed deltas are also stored here (OPENAI_STREAMS), so readers can resume */
  streamLog?: { store: StreamStore; prefix: string };
  /** the response cache (Proxy-Cache, cache.models) */
  cache?: ResponseCache;
  /** traceparent on the upstream call and the results; spans when exporting */
  tracing?: Tracing;
}

/** Tries to store one result before the delivery is handed back (see storeResult). */
export const STORE_ATTEMPTS = 5;

/** Handles one delivery; never throws. */
export async function handleMessage(m: WorkMsg, deps: HandleDeps): Promise<Finished> {
  // A per-message signal relayed from the long-lived shutdown signal: the SDK adds an
  // abort listener per call and never removes it, and listeners piling up on one
  // long-lived signal leak memory and make every add slower (seen: 460 MB, 70 req/s
  // after 100k requests).
  // It also ends a delivery that outlives worker.max_delivery_ms; settleFailure tells the
  // two apart by the shutdown signal itself.
  const local = new AbortController();
  const relay = () => local.abort();
  deps.signal.addEventListener("abort", relay, { once: true });
  // Tracing decorates this delivery's upstream calls and outputs (nothing without a trace).
  const trace = deps.tracing?.begin(m);
  try {
    const traced = trace ? { chat: trace.chat(deps.chat), out: trace.out(deps.out) } : {};
    const f = await handleOne(m, { ...deps, ...traced, signal: local.signal }, deps.signal, local);
    trace?.end(f);
    return f;
  } finally {
    deps.signal.removeEventListener("abort", relay);
  }
}

async function handleOne(
  m: WorkMsg,
  d: HandleDeps,
  shutdown: AbortSignal,
  local: AbortController,
): Promise<Finished> {
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
  let attempt: StreamAttempt | undefined;
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
  // working() may not keep one delivery alive for ever (a stall nothing else caught): past
  // the cap, stop it and end the attempt as a transient failure. The slot frees, and the
  // usual nak / max_deliver path applies.
  let capped = false;
  const cap = setTimeout(() => {
    capped = true;
    clearInterval(keepAlive);
    local.abort();
  }, s.maxDeliveryMs);
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
    // The id's last stored result: the result store is conditional on it (see
    // storeResult). A first delivery reads it while the API is called; null: read again.
    let lastResultSeq: Promise<number | null>;
    if (!m.redelivered) {
      lastResultSeq = d.out.lookupResult(id).then(
        (p) => p?.seq ?? 0,
        () => null,
      );
    } else {
      const prev = await d.out.lookupResult(id);
      lastResultSeq = Promise.resolve(prev?.seq ?? 0);
      // Only this message's own success: a different message reusing the id must not
      // receive someone else's answer.
      if (prev && isSuccessOf(prev.headers, m.seq)) {
        if (replyTo) {
          d.out.reply(replyTo, asEncoded(prev));
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
    // Streamed answers are stored for resuming readers even without a Reply-To.
    const streaming = req.params.stream === true && (replyTo !== "" || d.streamLog !== undefined);
    if (streaming) attempt = openAttempt(d, id, attempts, replyTo);
    const plan = d.cache?.plan(hdr(H.cache), req.params);
    const cached = plan ? await d.cache!.get(plan) : undefined;
    upstreamStart = Date.now();
    let result: ChatResult;
    if (cached) {
      result = replayCached(cached, attempt);
    } else {
      const release = await d.tenantGate?.acquire(tenant, d.signal);
      try {
        result = await callWithRetries(req, d, attempt, id, tenant, () => calls++);
      } finally {
        release?.();
      }
    }
    upstreamMs = cached ? 0 : Date.now() - upstreamStart;
    // Every stored delta has its PubAck before anything is acked: a lost one redoes the attempt.
    await attempt?.settle();
    const out = encodeSuccess(req.kind, result.completion, {
      id,
      attempts,
      upstreamRequestId: result.upstreamRequestId,
    });
    if (streaming) out.headers.set(H.stream, STREAM_DONE);
    out.headers.set(H.requestSeq, String(m.seq));
    if (plan) out.headers.set(H.cache, cached ? "hit" : "miss");
    carryHeaders(m.headers, out.headers);
    // The stream's end is stored before the result: a reader that saw the result's
    // attempt finish never waits for a `done` that is not coming.
    await attempt?.finish(out);
    // From here on the API has answered: a failure is ours, never worth another call.
    // Another delivery of this same message may be answering too (a redelivery while
    // this one's progress acks were lost): the first stored success wins, and both
    // reply with it.
    const answer = await storeResult(d, id, out, { seq: m.seq, lastSeq: await lastResultSeq });
    if (answer !== out) {
      d.log.info(
        { id, seq: m.seq },
        "this request's answer was already stored (by another delivery, or by a try whose PubAck was lost): the stored answer is sent",
      );
    }
    // Cached before the reply: a repeat sent as soon as the answer arrives is a hit.
    if (plan && !cached && answer === out) await d.cache!.put(plan, result.completion);
    if (replyTo) {
      d.out.reply(replyTo, answer);
      await d.out.flush();
    }
    m.ack();
    if (cached) return fin("ok");
    const u = result.completion.usage;
    return fin(
      "ok",
      u ? { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens } : {},
    );
  } catch (e) {
    const f = capped
      ? new Failure(
          "transient",
          Code.gatewayTimeout,
          `delivery exceeded worker.max_delivery_ms (${s.maxDeliveryMs} ms)`,
          undefined,
          { cause: e },
        )
      : classify(e, model);
    if (upstreamStart > 0 && upstreamMs === 0) upstreamMs = Date.now() - upstreamStart;
    const ctx = { id, kind, model, attempts, replyTo, shutdown, attempt };
    try {
      return await settleFailure(m, d, f, ctx, fin);
    } catch (e2) {
      // Could not write the verdict (NATS trouble): infrastructure, not the request's
      // fault. Hand it back without a verdict, re-queued on the last deliveries so it
      // does not end as poison.
      d.log.warn({ id, err: e2 }, "could not settle a failed request; handing it back");
      const errInfo = { code: f.code, error: f.message };
      try {
        return await pause(
          m,
          d,
          ctx,
          nakDelay(attempts, s.nakDelayMs, s.nakDelayMaxMs),
          fin,
          errInfo,
        );
      } catch {
        try {
          m.nak(s.nakDelayMs);
        } catch {
          // Connection gone: ack_wait brings it back.
        }
        return fin("retry", errInfo);
      }
    }
  } finally {
    clearInterval(keepAlive);
    clearTimeout(cap);
  }
}

interface Ctx {
  id: string;
  kind: "text" | "json";
  model: string;
  attempts: number;
  replyTo: string;
  /** the worker's shutdown signal (d.signal also aborts at worker.max_delivery_ms) */
  shutdown: AbortSignal;
  /** a streaming request's writer: its stream is closed with the error too */
  attempt?: StreamAttempt | undefined;
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
  if (c.shutdown.aborted) {
    // Shutting down: hand it back for another instance, after our own pulls expired.
    m.nak(d.quietDelay?.() ?? 0);
    return fin("aborted", errInfo);
  }
  const verdict = async () => {
    const original = { headers: m.headers, data: m.data };
    // Dead letter first: if it cannot be stored, nothing is acked and nothing is lost.
    await d.out.deadLetter(c.id, deadLetterKey(c.id, m.seq), original, {
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
    // Which message this verdict settles: the poison path leaves a message alone whose
    // own verdict and dead letter are stored (only its ack was lost).
    err.headers.set(H.requestSeq, String(m.seq));
    // Readers following the stream end with the error (best effort: the result has it too).
    await c.attempt?.finish(err).catch(() => undefined);
    // Conditional too (read now): a success of this message stored meanwhile by another
    // delivery is never overwritten by an error, and it is what is sent.
    const answer = await storeResult(d, c.id, err, { seq: m.seq, lastSeq: null });
    if (c.replyTo) {
      d.out.reply(c.replyTo, answer);
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
    case "infra":
      return pause(m, d, c, nakDelay(c.attempts, s.nakDelayMs, s.nakDelayMaxMs), fin, errInfo);
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
 * No verdict while the API is down or refuses our key, or the proxy's own machinery
 * fails: nak with a delay. On the last allowed delivery, re-queue a fresh copy instead,
 * so an outage never exhausts max_deliver and never fills the DLQ.
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

/**
 * Stores a result, retrying a failed store in-process (bounded backoff; working() keeps
 * the message alive) rather than letting a redelivery call the API again. What can never
 * be stored (too large, a header that cannot be encoded) throws as it is, a permanent
 * failure; a store that keeps failing throws an `infra` Failure: the delivery is handed
 * back, never answered with an error.
 *
 * Another delivery of the same message may be storing too (a redelivery while this
 * one's progress acks were lost, e.g. with the consumer's leader down). So every store
 * is conditional on the subject's last sequence (`race.lastSeq`: the id's last stored
 * sequence when the delivery began; null: read it now, as after any failed try, which
 * may have been stored all the same): whoever stores first wins, and a loser
 * returns the stored success of this message (`race.seq`) instead of its own answer.
 * @returns what to reply: `r`, or the success another delivery stored first
 */
async function storeResult(
  d: HandleDeps,
  id: string,
  r: Encoded,
  race: { seq: number; lastSeq: number | null },
): Promise<Encoded> {
  const s = d.settings;
  let lastSeq = race.lastSeq;
  for (let attempt = 1; ; attempt++) {
    try {
      if (lastSeq === null) {
        const prev = await d.out.lookupResult(id);
        if (prev && isSuccessOf(prev.headers, race.seq)) {
          return asEncoded(prev);
        }
        lastSeq = prev?.seq ?? 0;
      }
      await d.out.storeResult(id, r, lastSeq);
      return r;
    } catch (e) {
      const conflict = isWrongLastSequence(e);
      if (!conflict && classify(e).kind === "permanent") throw e;
      if (attempt >= STORE_ATTEMPTS || d.signal.aborted) {
        const why = e instanceof Error ? e.message : String(e);
        throw new Failure(
          "infra",
          Code.unavailable,
          `could not store the result (${attempt} attempts): ${why}`,
          undefined,
          { cause: e },
        );
      }
      // Read again before the next try: somebody stored, perhaps this very try.
      lastSeq = null;
      if (conflict) continue;
      d.log.debug({ id, attempt, err: e }, "storing the result failed; retrying");
      await sleep(backoffDelay(attempt, { minMs: s.retryMinMs, maxMs: s.retryMaxMs }), d.signal);
    }
  }
}

/** The writer of one streaming attempt: live to Reply-To, stored in OPENAI_STREAMS. */
function openAttempt(d: HandleDeps, id: string, attempts: number, replyTo: string): StreamAttempt {
  return openStreamAttempt(
    id,
    attempts,
    replyTo,
    (subject, r) => d.out.reply(subject, r),
    d.streamLog?.store,
    { prefix: d.streamLog?.prefix ?? "" },
  );
}

/** A cache hit as a call's result; a streaming request gets it as a few deltas. */
function replayCached(completion: CompletionLike, attempt: StreamAttempt | undefined): ChatResult {
  if (attempt) {
    attempt.beginCall();
    for (const chunk of completionChunks(completion)) attempt.delta(chunk);
  }
  return { completion };
}

async function callWithRetries(
  req: DecodedRequest,
  d: HandleDeps,
  attempt: StreamAttempt | undefined,
  id: string,
  tenant: string,
  counted: () => void,
): Promise<ChatResult> {
  const s = d.settings;
  const onDelta = attempt ? (chunk: unknown) => attempt.delta(chunk) : undefined;
  return pRetry(
    async () => {
      if (d.breaker.isOpen)
        throw new AbortError(
          new Failure("transient", Code.unavailable, `API unavailable: ${d.breaker.reason}`),
        );
      try {
        await d.limiter?.acquire(req.params.model, d.signal);
        await d.tenantLimiter?.acquire(tenant, d.signal);
      } catch (e) {
        // The limiters' streams and subjects are the proxy's own, not the request's fault.
        const why = e instanceof Error ? e.message : String(e);
        throw new AbortError(
          new Failure(
            "infra",
            Code.unavailable,
            `rate limiter unavailable for model "${req.params.model}" / tenant "${tenant}": ${why}`,
            undefined,
            { cause: e },
          ),
        );
      }
      counted();
      attempt?.beginCall();
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
