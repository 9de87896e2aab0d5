/**
 * Reading a streamed answer from OPENAI_STREAMS (docs/protocol.md, "Streams that survive
 * a disconnect"): from the start or after delta n, following it live until `done`.
 * Each reader has its own ordered consumer (no durable state on the server), so any
 * number can follow one request at once.
 */
import { jetstream, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { Code } from "../protocol/codes.js";
import { H, STREAM_DELTA, STREAM_RESTART } from "../protocol/headers.js";
import { readResult, type ResultView } from "../protocol/result.js";
import { streamRestart, type StreamRestart } from "../protocol/stream.js";
import { idProblem, subjectFor } from "../protocol/subjects.js";

export interface ResumeNames {
  streamsStream: string;
  streamsPrefix: string;
  resultsStream: string;
  resultsPrefix: string;
  /** the work queue: a request still waiting there is waited for, not a 404 */
  requestsStream?: string;
  requestsPrefix?: string;
}

export interface ResumeOptions {
  /**
   * Skip the first n deltas of the attempt running (the text after its last restart):
   * the reader already has them. Default 0: from the start.
   */
  after?: number;
  /** give up after this long (default: wait for `done` however long it takes) */
  timeoutMs?: number;
}

/** What a resumed reader cannot read (unknown or expired id, timeout); `code` as on the wire. */
export class ResumeError extends Error {
  override readonly name = "ResumeError";
  constructor(
    readonly code: number,
    message: string,
    readonly id: string,
  ) {
    super(message);
  }
}

const dec = new TextDecoder();

interface Event {
  seq: number;
  kind: string;
  deltaSeq: number;
  attempt: number;
  headers: MsgHdrs | undefined;
  data: Uint8Array;
}

function toEvent(m: JsMsg): Event {
  const get = (k: string) => m.headers?.get(k) ?? "";
  return {
    seq: m.seq,
    kind: get(H.stream),
    deltaSeq: Number(get(H.streamSeq)) || 0,
    attempt: Number(get(H.attempts)) || 0,
    headers: m.headers,
    data: m.data,
  };
}

/**
 * Yields the chunks of request `id`'s streamed answer (and a {@link StreamRestart} when
 * a redelivered attempt starts over: drop what came before), and returns the final
 * reply. A request whose stream is gone but whose result is stored returns the result
 * at once (no chunks).
 * @throws ResumeError 404 at once when neither a stream nor a result exists for `id`
 */
export async function* resumeStream(
  nc: NatsConnection,
  jsm: JetStreamManager,
  n: ResumeNames,
  id: string,
  o: ResumeOptions = {},
): AsyncGenerator<unknown, ResultView> {
  const problem = idProblem(id);
  if (problem) throw new ResumeError(Code.badRequest, problem, id);
  const after = o.after ?? 0;
  if (!Number.isInteger(after) || after < 0)
    throw new ResumeError(Code.badRequest, `after must be a whole number ≥ 0, got ${after}`, id);
  const subject = subjectFor(n.streamsPrefix, id);
  const resultSubject = subjectFor(n.resultsPrefix, id);
  const last = await jsm.direct.getMessage(n.streamsStream, { last_by_subj: subject });
  // A request still queued (or in flight before its first delta): its stream or its
  // result is yet to come, so the reader follows both from the start.
  let result: Promise<Msg> | undefined;
  let resultSub: Subscription | undefined;
  if (!last) {
    // Listening first: a result stored between the lookups below still arrives.
    resultSub = nc.subscribe(resultSubject, { max: 1 });
    const r = await jsm.direct.getMessage(n.resultsStream, { last_by_subj: resultSubject });
    if (r) {
      resultSub.unsubscribe();
      return readResult(id, r.header, r.data);
    }
    if (!(await isQueued(jsm, n, id))) {
      resultSub.unsubscribe();
      throw new ResumeError(
        Code.notFound,
        `no streamed answer, no result and no queued request for "${id}": the id is unknown, or it expired (streams are kept 15 minutes, results 24 hours)`,
        id,
      );
    }
    result = (async () => {
      for await (const m of resultSub) return m;
      throw new Error("result subscription closed");
    })();
    result.catch(() => undefined);
  }
  // One filter as a string: nats.js then names the subject in the create call
  // (CONSUMER.CREATE.<stream>.<name>.<filter>), which permissions can scope.
  const c = await jetstream(nc).consumers.get(n.streamsStream, { filter_subjects: subject });
  const msgs = await c.consume();
  // A result before any delta (a request that does not stream, or a stream no longer
  // kept): the answer, with no chunks.
  let early: Msg | undefined;
  let seen = false;
  let skip = after;
  void result?.then(
    (m) => {
      if (seen) return;
      early = m;
      void msgs.stop();
    },
    () => undefined,
  );
  let timedOut = false;
  const timer =
    o.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          void msgs.stop();
        }, o.timeoutMs)
      : undefined;
  try {
    // What was there when the reader came: only the text after its last restart counts.
    const backlog: Event[] = [];
    let live = false;
    for await (const m of msgs) {
      seen = true;
      const e = toEvent(m);
      if (!last) {
        // Nothing was there when the reader came: every event is live.
        if (e.kind === STREAM_RESTART) {
          skip = 0; // `after` counted the deltas of the attempt that was running
          yield streamRestart(e.attempt) satisfies StreamRestart;
        } else if (e.kind === STREAM_DELTA) {
          if (e.deltaSeq > skip) yield JSON.parse(dec.decode(e.data)) as unknown;
        } else return readResult(id, e.headers, e.data);
        continue;
      }
      if (!live) {
        if (e.kind === STREAM_RESTART) backlog.length = 0;
        else backlog.push(e);
        if (e.seq < last.seq) continue;
        live = true;
        for (const b of backlog) {
          if (b.kind === STREAM_DELTA) {
            if (b.deltaSeq > after) yield JSON.parse(dec.decode(b.data)) as unknown;
          } else return readResult(id, b.headers, b.data);
        }
        continue;
      }
      if (e.kind === STREAM_RESTART) yield streamRestart(e.attempt) satisfies StreamRestart;
      else if (e.kind === STREAM_DELTA) yield JSON.parse(dec.decode(e.data)) as unknown;
      else return readResult(id, e.headers, e.data);
    }
    if (early) return readResult(id, early.headers, early.data);
    if (timedOut)
      throw new ResumeError(
        Code.expired,
        `the stream of request "${id}" did not end within ${o.timeoutMs} ms; resume again later`,
        id,
      );
    throw new ResumeError(
      Code.unavailable,
      `reading the stream of request "${id}" stopped before its end`,
      id,
    );
  } finally {
    clearTimeout(timer);
    resultSub?.unsubscribe();
    await msgs.close().catch(() => undefined);
  }
}

/** Whether request `id` is in the work queue (any lane), when the client named it. */
async function isQueued(jsm: JetStreamManager, n: ResumeNames, id: string): Promise<boolean> {
  if (!n.requestsStream || !n.requestsPrefix) return false;
  for (const filter of [subjectFor(n.requestsPrefix, id), `${n.requestsPrefix}.*.*.${id}`]) {
    const info = await jsm.streams.info(n.requestsStream, { subjects_filter: filter });
    if (Object.keys(info.state.subjects ?? {}).length > 0) return true;
  }
  return false;
}
