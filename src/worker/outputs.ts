/**
 * Where a handled request's outcome goes: the results stream (waiting for its
 * PubAck), the caller's Reply-To, and the dead-letter stream. An interface, so the
 * lifecycle in handle.ts can be tested with fakes.
 */
import {
  headers as natsHeaders,
  nuid,
  type MsgHdrs,
  type NatsConnection,
} from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { CLIENT_HEADERS, H } from "../protocol/headers.js";
import { subjectFor } from "../protocol/subjects.js";
import { encodedSize, type Encoded } from "../protocol/result.js";
import { Code, RequestError } from "../protocol/codes.js";

export interface StoredMessage {
  headers: MsgHdrs | undefined;
  data: Uint8Array;
  /** its stream sequence (what a later conditional store expects) */
  seq?: number;
}

export interface Outputs {
  /**
   * Stores the result as `<results>.<id>` and resolves on its PubAck. Throws a
   * RequestError (413) for a result larger than the server's max_payload. With
   * `expectLastSeq`, the server stores it only if the subject's last message still has
   * that sequence (0: none); otherwise it refuses (see `isWrongLastSequence`).
   */
  storeResult(id: string, r: Encoded, expectLastSeq?: number): Promise<void>;
  /** Publishes to a reply subject (core NATS, fire and forget). */
  reply(subject: string, r: Encoded): void;
  /**
   * Resolves once the server has everything published so far (a PING round trip).
   * nats.js silently drops what is published while it reconnects, so the ack waits for
   * this: a reply lost that way means no ack, hence a redelivery that re-sends it.
   */
  flush(): Promise<void>;
  /** The stored result for `id`, or null (a leader read, not a replica's). */
  lookupResult(id: string): Promise<StoredMessage | null>;
  /** The dead letter stored for `id`, or null. */
  lookupDeadLetter(id: string): Promise<StoredMessage | null>;
  /**
   * Stores a dead letter: the original body and headers plus the failure headers.
   * `key` makes a retried write idempotent.
   */
  deadLetter(
    id: string,
    key: string,
    original: StoredMessage,
    failure: { code: number; message: string; attempts: number; subject: string },
  ): Promise<void>;
  /** Re-queues a copy of a request as a fresh message (deliveries start again at 1). */
  requeue(id: string, key: string, original: StoredMessage): Promise<void>;
}

export interface OutputNames {
  results: string;
  dlq: string;
  resultsPrefix: string;
  dlqPrefix: string;
  requestsPrefix: string;
}

/**
 * The Nats-Msg-Id of the dead letter of request message `seq` of `id`: a retried write of
 * it is deduplicated, and the poison path recognises a message's own dead letter by it.
 */
export function deadLetterKey(id: string, seq: number): string {
  return `${id}.dlq.${seq}`;
}

/** A stored message as something to reply with. */
export function asEncoded(m: StoredMessage): Encoded {
  return { headers: m.headers ?? natsHeaders(), data: m.data };
}

/** A dead letter's error text is cut here (upstream messages can be long). */
const MAX_ERROR_CHARS = 2000;

/** Outputs on a real connection. */
export function natsOutputs(
  nc: NatsConnection,
  js: JetStreamClient,
  jsm: JetStreamManager,
  n: OutputNames,
): Outputs {
  return {
    async storeResult(id, r, expectLastSeq) {
      const max = nc.info?.max_payload ?? 0;
      const size = encodedSize(r);
      if (max > 0 && size > max) {
        throw new RequestError(
          Code.tooLarge,
          `the answer is ${size} bytes, more than the NATS server's max_payload (${max} bytes), so it can be neither stored nor sent: ask for a shorter answer (max_tokens or max_completion_tokens, fewer choices) or raise max_payload in the nats-server configuration`,
        );
      }
      const subject = subjectFor(n.resultsPrefix, id);
      const expect =
        expectLastSeq === undefined ? {} : { expect: { lastSubjectSequence: expectLastSeq } };
      const pa = await js.publish(subject, r.data, { headers: r.headers, ...expect });
      // Results keep Nats-Msg-Id = id, and the stream dedupes only for 100 ms; a new
      // outcome inside that window must still replace the old one.
      if (pa.duplicate) {
        // A copy of the headers: nats.js writes msgID into the headers object, and the
        // reply that follows must still carry Nats-Msg-Id = id.
        const h = cloneHeaders(r.headers);
        await js.publish(subject, r.data, {
          headers: h,
          msgID: `${id}.${nuid.next()}`,
          ...expect,
        });
      }
    },
    reply(subject, r) {
      nc.publish(subject, r.data, { headers: r.headers });
    },
    flush() {
      return nc.flush();
    },
    async lookupResult(id) {
      const sm = await jsm.streams.getMessage(n.results, {
        last_by_subj: subjectFor(n.resultsPrefix, id),
      });
      return sm ? { headers: sm.header, data: sm.data, seq: sm.seq } : null;
    },
    async lookupDeadLetter(id) {
      const sm = await jsm.streams.getMessage(n.dlq, { last_by_subj: subjectFor(n.dlqPrefix, id) });
      return sm ? { headers: sm.header, data: sm.data, seq: sm.seq } : null;
    },
    async deadLetter(id, key, original, failure) {
      const h = copyHeaders(original.headers);
      const why = failure.message.replace(/[\r\n]+/g, " ");
      h.set(
        H.serviceError,
        why.length > MAX_ERROR_CHARS ? `${why.slice(0, MAX_ERROR_CHARS)}…` : why,
      );
      h.set(H.serviceErrorCode, String(failure.code));
      h.set(H.attempts, String(failure.attempts));
      h.set(H.failedAt, new Date().toISOString());
      h.set(H.requestSubject, failure.subject);
      h.set(H.msgId, key);
      // A request as large as max_payload leaves no room for the failure headers: the dead
      // letter keeps everything but the body (which only the submitter can send again),
      // so the request still settles instead of being handed back for ever.
      let data = original.data;
      const max = nc.info?.max_payload ?? 0;
      if (max > 0 && encodedSize({ headers: h, data }) > max) {
        h.set(H.bodyOmitted, String(data.length));
        data = new Uint8Array(0);
      }
      // The key makes a retried write of the same dead letter idempotent.
      await js.publish(subjectFor(n.dlqPrefix, id), data, { headers: h, msgID: key });
    },
    async requeue(id, key, original) {
      const h = copyHeaders(original.headers);
      h.set(H.msgId, key);
      await js.publish(subjectFor(n.requestsPrefix, id), original.data, { headers: h, msgID: key });
    },
  };
}

/**
 * A mutable copy of a request's client headers: only those in `CLIENT_HEADERS`, never a
 * client's `Nats-*` header (see there). For dead letters, re-queues, replays and the shim.
 */
export function copyHeaders(src: MsgHdrs | undefined): MsgHdrs {
  const h = natsHeaders();
  if (!src) return h;
  for (const k of CLIENT_HEADERS) for (const v of src.values(k)) h.append(k, v);
  return h;
}

/** A mutable copy of every header of a message the proxy built itself (a result). */
export function cloneHeaders(src: MsgHdrs): MsgHdrs {
  const h = natsHeaders();
  for (const [k, vs] of src) for (const v of vs) h.append(k, v);
  return h;
}
