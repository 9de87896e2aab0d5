/**
 * Reading a streamed answer from OPENAI_STREAMS (docs/protocol.md, "Streams that survive
 * a disconnect"): from the start or after delta n, following it live until `done`.
 * Each reader has its own ordered consumer (no durable state on the server), so any
 * number can follow one request at once.
 */
import { jetstream, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
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
  const last = await jsm.direct.getMessage(n.streamsStream, { last_by_subj: subject });
  if (!last) {
    const r = await jsm.direct.getMessage(n.resultsStream, {
      last_by_subj: subjectFor(n.resultsPrefix, id),
    });
    if (r) return readResult(id, r.header, r.data);
    throw new ResumeError(
      Code.notFound,
      `no streamed answer and no result for request "${id}": the id is unknown, the request has not started yet, or it expired (streams are kept 15 minutes, results 24 hours)`,
      id,
    );
  }
  // One filter as a string: nats.js then names the subject in the create call
  // (CONSUMER.CREATE.<stream>.<name>.<filter>), which permissions can scope.
  const c = await jetstream(nc).consumers.get(n.streamsStream, { filter_subjects: subject });
  const msgs = await c.consume();
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
      const e = toEvent(m);
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
    await msgs.close().catch(() => undefined);
  }
}
