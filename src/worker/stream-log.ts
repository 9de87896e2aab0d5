/**
 * Streamed answers that survive a disconnect (docs/protocol.md): every delta of a
 * streaming request goes live to its Reply-To and into the stream OPENAI_STREAMS
 * (`<prefix>.<id>`), numbered by `Openai-Stream-Seq` within its attempt; a redelivered
 * attempt opens with `Openai-Stream: restart`; the final reply closes it.
 *
 * Stored copies are published without waiting for each PubAck (the chunk loop must not
 * slow to a round trip per token); `settle()` waits for all of them before the result
 * is stored, and a lost one fails the attempt (transient), so a reader never meets a
 * hole in an answer that was acked.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Code } from "../protocol/codes.js";
import { H, JSON_TYPE, STREAM_DELTA, STREAM_DONE, STREAM_RESTART } from "../protocol/headers.js";
import type { Encoded } from "../protocol/result.js";
import { subjectFor } from "../protocol/subjects.js";
import { Failure } from "./errors.js";
import { cloneHeaders } from "./outputs.js";

/** Where a stored copy goes; resolves on its PubAck. */
export type StreamStore = (subject: string, r: Encoded, msgId: string) => Promise<unknown>;

/** One delivery attempt of one streaming request. */
export interface StreamAttempt {
  /**
   * Called before each upstream call (or cache replay): a redelivered attempt, or a
   * retry after deltas went out, first publishes `Openai-Stream: restart` and numbering
   * starts again at 1.
   */
  beginCall(): void;
  /** Publishes one chunk live and stores it (not waiting for the PubAck). */
  delta(chunk: unknown): void;
  /** Resolves once every stored copy so far has its PubAck; throws a transient Failure if one failed. */
  settle(): Promise<void>;
  /** Stores the final reply (with `Openai-Stream: done`) and waits for its PubAck. */
  finish(r: Encoded): Promise<void>;
}

export interface StreamLogOptions {
  /** subject prefix of the streams stream, e.g. openai.streams */
  prefix: string;
}

const enc = new TextEncoder();

/**
 * Opens the writer of one attempt.
 * @param store stores a copy in OPENAI_STREAMS; undefined: live copies only
 * @param live publishes to the Reply-To ("" for none)
 */
export function openStreamAttempt(
  id: string,
  attempts: number,
  replyTo: string,
  live: (subject: string, r: Encoded) => void,
  store: StreamStore | undefined,
  o: StreamLogOptions,
): StreamAttempt {
  const subject = subjectFor(o.prefix, id);
  let seq = 0;
  let calls = 0;
  let restarts = 0;
  let failed: { seq: number; err: unknown } | undefined;
  const pending: Promise<void>[] = [];
  const emit = (kind: string, data: Uint8Array, n: number) => {
    const h = natsHeaders();
    h.set(H.stream, kind);
    h.set(H.attempts, String(attempts));
    if (kind === STREAM_DELTA) {
      h.set(H.streamSeq, String(n));
      h.set(H.contentType, JSON_TYPE);
    }
    if (store) {
      const key = `${id}.${attempts}.${kind === STREAM_DELTA ? n : `${kind}${restarts}`}`;
      pending.push(
        store(subject, { headers: copy(h), data }, key).then(
          () => undefined,
          (err: unknown) => {
            failed ??= { seq: n, err };
          },
        ),
      );
    }
    if (replyTo) {
      h.set(H.msgId, id);
      live(replyTo, { headers: h, data });
    }
  };
  return {
    beginCall() {
      calls++;
      if ((calls === 1 && attempts > 1) || seq > 0) {
        restarts++;
        seq = 0;
        emit(STREAM_RESTART, new Uint8Array(0), 0);
      }
    },
    delta(chunk) {
      seq++;
      emit(STREAM_DELTA, enc.encode(JSON.stringify(chunk)), seq);
    },
    async settle() {
      await Promise.all(pending.splice(0));
      if (failed) {
        const why = failed.err instanceof Error ? failed.err.message : String(failed.err);
        throw new Failure(
          "transient",
          Code.unavailable,
          `could not store streamed delta ${failed.seq} of ${id}: ${why}`,
          undefined,
          { cause: failed.err },
        );
      }
    },
    async finish(r) {
      if (!store) return;
      const h = cloneHeaders(r.headers);
      h.set(H.stream, STREAM_DONE);
      h.delete(H.msgId);
      await store(subject, { headers: h, data: r.data }, `${id}.${attempts}.done`);
    },
  };
}

function copy(h: MsgHdrs): MsgHdrs {
  return cloneHeaders(h);
}

/** Stores copies in OPENAI_STREAMS with a JetStream publish. */
export function jetStreamStore(js: JetStreamClient): StreamStore {
  return (subject, r, msgId) => js.publish(subject, r.data, { headers: r.headers, msgID: msgId });
}
