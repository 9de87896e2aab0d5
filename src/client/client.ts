/**
 * The typed client library: submit (fire and forget), request (wait for the reply),
 * stream (deltas then the final reply) and result (read or wait for a stored
 * result). The CLI is built on it; it speaks the protocol, never worker internals.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { isConnectionTrouble, isNoResponders, isTimeout } from "../nats/errors.js";
import {
  createInbox,
  headers as natsHeaders,
  type MsgHdrs,
  type NatsConnection,
} from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Config } from "../config/schema.js";
import { publishFailure } from "../nats/publish-errors.js";
import { Code } from "../protocol/codes.js";
import { H, JSON_TYPE, STREAM_DELTA, STREAM_RESTART, TEXT_TYPE } from "../protocol/headers.js";
import { parseCacheTtl } from "../protocol/cache.js";
import { streamRestart } from "../protocol/stream.js";
import { resumeStream, type ResumeOptions } from "./resume.js";
import { validateParams, type ChatParams } from "../protocol/request.js";
import { readResult, type ResultView } from "../protocol/result.js";
import { DEFAULT_SUBJECTS, idProblem, newId, subjectFor } from "../protocol/subjects.js";
import {
  DEFAULT_TENANT,
  isPriority,
  laneSubject,
  priorityProblem,
  type Priority,
} from "../protocol/lanes.js";
import { tenantAdmission, type TenantAdmission } from "../nats/tenants.js";
import { ensureTraceparent } from "../protocol/traceparent.js";

/** A refused submission or a failed wait; `code` is the wire error code. */
export class ClientError extends Error {
  override readonly name: string = "ClientError";
  constructor(
    readonly code: number,
    message: string,
    readonly id?: string,
  ) {
    super(message);
  }
}

/** No reply within the timeout. The request stays queued: read it later with `result(id)`. */
export class RequestTimeoutError extends ClientError {
  override readonly name: string = "RequestTimeoutError";
  constructor(id: string, timeoutMs: number) {
    super(
      Code.expired,
      `no reply within ${timeoutMs} ms; the request ${id} is still queued — read it later with "nats-openai-proxy result ${id} --wait"`,
      id,
    );
  }
}

export interface ClientNames {
  requestsStream: string;
  resultsStream: string;
  batchesStream: string;
  requestsPrefix: string;
  resultsPrefix: string;
  batchesPrefix: string;
  /** streamed answers (resume); optional for names built before they existed */
  streamsStream?: string;
  streamsPrefix?: string;
}

export const DEFAULT_NAMES: ClientNames = Object.freeze({
  requestsStream: "OPENAI_REQUESTS",
  resultsStream: "OPENAI_RESULTS",
  batchesStream: "OPENAI_BATCHES",
  requestsPrefix: DEFAULT_SUBJECTS.requests,
  resultsPrefix: DEFAULT_SUBJECTS.results,
  batchesPrefix: "openai.batches",
  streamsStream: "OPENAI_STREAMS",
  streamsPrefix: "openai.streams",
});

/** Names from a loaded configuration. */
export function namesFromConfig(c: Config): ClientNames {
  return {
    requestsStream: c.streams.requests,
    resultsStream: c.streams.results,
    batchesStream: c.streams.batches,
    requestsPrefix: c.streams.requests_prefix,
    resultsPrefix: c.streams.results_prefix,
    batchesPrefix: c.streams.batches_prefix,
    streamsStream: c.streams.streams,
    streamsPrefix: c.streams.streams_prefix,
  };
}

/** A prompt (text, the original format) or Chat Completions params (JSON). */
export type RequestInput = string | (Partial<ChatParams> & { messages: ChatParams["messages"] });

export interface SubmitOptions {
  /** request id (default: a fresh one); a repeat inside the duplicate window is not queued twice */
  id?: string;
  /** where the reply goes besides the results stream */
  replyTo?: string;
  /** past this instant the API is not called (408) */
  expiresAt?: Date | number;
  /** extra headers (e.g. batch bookkeeping) */
  headers?: Record<string, string>;
  /** PubAck timeout */
  timeoutMs?: number;
  /** `high`, `normal` or `low` (default: `normal` for submit, `high` for request and stream) */
  priority?: Priority;
  /** who is served and charged (default `default`); must be one of the proxy's tenants */
  tenant?: string;
  /**
   * Keep retrying an unacknowledged publish (timeouts, no responders during a leader
   * election or a server restart) with the same Nats-Msg-Id for this long (default
   * 15 s); the stream's dedupe makes the retries safe. A full queue is not retried.
   */
  retryForMs?: number;
  /** answer from the response cache, and cache the answer, for this long (`10m`, `30s`: Proxy-Cache) */
  cache?: string;
}

export interface Submitted {
  id: string;
  /** true when the id was already accepted inside the duplicate window */
  duplicate: boolean;
  seq: number;
}

export interface RequestOptions extends Omit<SubmitOptions, "replyTo"> {
  /** how long to wait for the reply (default 60 s) */
  timeoutMs?: number;
  /** streaming: called with each chunk (chat.completion.chunk JSON) */
  onDelta?: (chunk: unknown) => void;
  /** streaming: a redelivered attempt starts the answer over (drop the chunks so far) */
  onRestart?: (attempt: number) => void;
}

export interface StreamOptions extends Omit<RequestOptions, "onDelta" | "onRestart"> {
  /** read the stream of this earlier request instead of sending one (the input is ignored) */
  resume?: string;
  /** with `resume`: skip the first n deltas of the running attempt */
  after?: number;
}

const enc = new TextEncoder();

/** Encodes a request body and its content type. Validates JSON params up front. */
export function encodeInput(input: RequestInput): { data: Uint8Array; contentType: string } {
  if (typeof input === "string") return { data: enc.encode(input), contentType: TEXT_TYPE };
  // Validate with a placeholder model so a missing model stays missing (the proxy's default applies).
  validateParams({ model: "-", ...input }, "-");
  return { data: enc.encode(JSON.stringify(input)), contentType: JSON_TYPE };
}

export class ProxyClient {
  private readonly js: JetStreamClient;
  private readonly admission: TenantAdmission;

  constructor(
    readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    readonly names: ClientNames = DEFAULT_NAMES,
  ) {
    this.js = jetstream(nc);
    this.admission = tenantAdmission(jsm, { stream: names.requestsStream });
  }

  /** Publishes a request into the work queue and resolves on its PubAck. */
  async submit(input: RequestInput, o: SubmitOptions = {}): Promise<Submitted> {
    const { data, contentType } = encodeInput(input);
    return this.submitRaw(data, contentType, o);
  }

  /** Like `submit`, for a body already encoded. */
  async submitRaw(
    data: Uint8Array,
    contentType: string,
    o: SubmitOptions = {},
  ): Promise<Submitted> {
    const id = o.id ?? newId();
    const tenant = o.tenant ?? DEFAULT_TENANT;
    const priority = o.priority ?? "normal";
    const problem = idProblem(id) ?? (isPriority(priority) ? undefined : priorityProblem(priority));
    if (problem) throw new ClientError(Code.badRequest, problem, id);
    const refused = await this.admission.check(tenant);
    if (refused) throw new ClientError(refused.code, refused.message, id);
    const h: MsgHdrs = natsHeaders();
    h.set(H.contentType, contentType);
    if (o.replyTo) h.set(H.replyTo, o.replyTo);
    if (o.expiresAt !== undefined) h.set(H.expiresAt, new Date(o.expiresAt).toISOString());
    for (const [k, v] of Object.entries(o.headers ?? {})) h.set(k, v);
    if (o.cache !== undefined) {
      try {
        parseCacheTtl(o.cache);
      } catch (e) {
        throw new ClientError(Code.badRequest, (e as Error).message, id);
      }
      h.set(H.cache, o.cache);
    }
    // The caller's trace (headers.traceparent), or a new one.
    ensureTraceparent(h);
    const subject = laneSubject(this.names.requestsPrefix, tenant, priority, id);
    const deadline = Date.now() + (o.retryForMs ?? 15_000);
    for (let wait = 100; ; wait = Math.min(wait * 2, 2000)) {
      try {
        const pa = await this.js.publish(subject, data, {
          msgID: id,
          headers: h,
          ...(o.timeoutMs ? { timeout: o.timeoutMs } : {}),
        });
        if (!pa.duplicate) this.admission.accepted(tenant);
        return { id, duplicate: pa.duplicate, seq: pa.seq };
      } catch (e) {
        // No PubAck (timeout, a stream leader being elected, reconnecting): the same
        // Nats-Msg-Id makes the retry safe.
        const retriable = isTimeout(e) || isNoResponders(e) || isConnectionTrouble(e);
        if (!retriable || Date.now() + wait > deadline) {
          if (isNoResponders(e))
            throw new ClientError(
              Code.badRequest,
              `no lane serves tenant "${tenant}" priority ${priority} (no stream captures ${subject}): check the tenant name, or add it under tenants and run "nats-openai-proxy streams apply"`,
              id,
            );
          const f = publishFailure(e, this.names.requestsStream, subject);
          throw new ClientError(f.code, f.message, id);
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /**
   * Submits durably with a Reply-To inbox and waits for the reply. On timeout the
   * request stays queued (`RequestTimeoutError` carries its id).
   */
  async request(input: RequestInput, o: RequestOptions = {}): Promise<ResultView> {
    const timeoutMs = o.timeoutMs ?? 60_000;
    // Honour the connection's inboxPrefix: applications restricted to their own inbox
    // prefix (docs/security.md) must receive replies there.
    const inbox = createInbox(
      (this.nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix ?? "",
    );
    const sub = this.nc.subscribe(inbox);
    const id = o.id ?? newId();
    const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
    try {
      await this.submit(input, {
        priority: "high",
        ...o,
        id,
        replyTo: inbox,
        timeoutMs: Math.min(timeoutMs, 10_000),
      });
      for await (const m of sub) {
        if (m.headers?.get(H.stream) === STREAM_DELTA) {
          if (o.onDelta) o.onDelta(m.json());
          continue;
        }
        if (m.headers?.get(H.stream) === STREAM_RESTART) {
          o.onRestart?.(Number(m.headers.get(H.attempts)) || 0);
          continue;
        }
        return readResult(id, m.headers, m.data);
      }
      throw new RequestTimeoutError(id, timeoutMs);
    } finally {
      clearTimeout(timer);
      if (!sub.isClosed()) sub.unsubscribe();
    }
  }

  /**
   * Streams a JSON request: yields each delta chunk, and returns the final reply. A
   * `StreamRestart` (see isStreamRestart) means a redelivered attempt starts over: drop
   * the chunks received so far. With `resume: id`, reads an earlier request's stream.
   */
  async *stream(
    input: Exclude<RequestInput, string>,
    o: StreamOptions = {},
  ): AsyncGenerator<unknown, ResultView> {
    if (o.resume !== undefined) {
      return yield* this.resume(o.resume, {
        ...(o.after !== undefined ? { after: o.after } : {}),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      });
    }
    const queue: unknown[] = [];
    let wake: (() => void) | undefined;
    let done: { r?: ResultView; e?: unknown } | undefined;
    void this.request(
      { ...input, stream: true },
      {
        ...o,
        onDelta: (c) => {
          queue.push(c);
          wake?.();
        },
        onRestart: (attempt) => {
          queue.push(streamRestart(attempt));
          wake?.();
        },
      },
    ).then(
      (r) => {
        done = { r };
        wake?.();
      },
      (e: unknown) => {
        done = { e };
        wake?.();
      },
    );
    for (;;) {
      while (queue.length > 0) yield queue.shift();
      if (done) {
        if (done.e) throw done.e instanceof Error ? done.e : new Error("stream failed");
        return done.r!;
      }
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }

  /**
   * Reads the streamed answer of request `id` (OPENAI_STREAMS) from the start, or after
   * delta `after`, following it live; yields the same events as `stream()` and returns
   * the final reply. A request still queued is waited for (its stream, or its result
   * when it does not stream). Unknown or expired id: ResumeError 404 at once.
   */
  resume(id: string, o: ResumeOptions = {}): AsyncGenerator<unknown, ResultView> {
    return resumeStream(
      this.nc,
      this.jsm,
      {
        streamsStream: this.names.streamsStream ?? "OPENAI_STREAMS",
        streamsPrefix: this.names.streamsPrefix ?? "openai.streams",
        resultsStream: this.names.resultsStream,
        resultsPrefix: this.names.resultsPrefix,
        requestsStream: this.names.requestsStream,
        requestsPrefix: this.names.requestsPrefix,
      },
      id,
      o,
    );
  }

  /**
   * The stored result for `id`: null when none (yet). With `wait`, waits for it
   * (until `timeoutMs`, default forever).
   */
  async result(
    id: string,
    o: { wait?: boolean; timeoutMs?: number } = {},
  ): Promise<ResultView | null> {
    const problem = idProblem(id);
    if (problem) throw new ClientError(Code.badRequest, problem, id);
    const subject = subjectFor(this.names.resultsPrefix, id);
    // Subscribe before reading, so a result published after the read is not missed.
    const sub = o.wait ? this.nc.subscribe(subject, { max: 1 }) : undefined;
    try {
      const stored = await this.lookup(subject);
      if (stored || !sub) return stored ? readResult(id, stored.header, stored.data) : null;
      // The server delivers a publish to subscribers at once and stores it a moment later:
      // a result published just before the subscription and read just before it was
      // stored is in neither. Reading again now and then (250 ms, doubling to 2 s) finds it.
      let found: ResultView | undefined;
      let poll: NodeJS.Timeout | undefined;
      const again = (ms: number) => {
        poll = setTimeout(() => {
          void this.lookup(subject).then(
            (sm) => {
              if (sm && !sub.isClosed()) {
                found = readResult(id, sm.header, sm.data);
                sub.unsubscribe();
              } else if (!sub.isClosed()) again(Math.min(ms * 2, 2000));
            },
            () => {
              if (!sub.isClosed()) again(Math.min(ms * 2, 2000));
            },
          );
        }, ms);
      };
      again(250);
      const timer = o.timeoutMs ? setTimeout(() => sub.unsubscribe(), o.timeoutMs) : undefined;
      try {
        for await (const m of sub) return readResult(id, m.headers, m.data);
      } finally {
        clearTimeout(timer);
        clearTimeout(poll);
      }
      return found ?? null;
    } finally {
      if (sub && !sub.isClosed()) sub.unsubscribe();
    }
  }

  private async lookup(subject: string) {
    // Direct get: any replica answers (allow_direct is set on the results stream).
    return this.jsm.direct.getMessage(this.names.resultsStream, { last_by_subj: subject });
  }

  /** Closes the connection if the client opened it. */
  async close(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}

/** A client on an open connection. */
export async function createClient(
  nc: NatsConnection,
  names: ClientNames = DEFAULT_NAMES,
): Promise<ProxyClient> {
  return new ProxyClient(nc, await jetstreamManager(nc), names);
}
