/**
 * Dead-letter operations: list, show, replay (back into the work queue, removing
 * each dead letter only after the requeued copy's PubAck) and purge.
 */
import { DeliverPolicy, jetstream, type JsMsg } from "@nats-io/jetstream";
import { isAlreadyGone } from "../nats/errors.js";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import { H } from "../protocol/headers.js";
import { idFromSubject, subjectFor } from "../protocol/subjects.js";
import { copyHeaders } from "../worker/outputs.js";
import {
  DEFAULT_TENANT,
  LEGACY_PRIORITY,
  parseRequestSubject,
  type Priority,
} from "../protocol/lanes.js";

export interface DlqNames {
  dlqStream: string;
  dlqPrefix: string;
  requestsPrefix: string;
}

export interface DeadLetter {
  id: string;
  seq: number;
  /** where the request was queued (replay puts it back there) */
  tenant: string;
  priority: Priority;
  /** the subject the request was queued on */
  subject: string;
  code: number;
  error: string;
  attempts: number;
  failedAt: string;
  headers: MsgHdrs;
  data: Uint8Array;
}

/** A dead letter that cannot be put back (it was kept without its body). */
export class NotReplayableError extends Error {
  override readonly name = "NotReplayableError";
}

function toDeadLetter(sm: StoredMsg, requestsPrefix: string): DeadLetter {
  const h = sm.header;
  const id = idFromSubject(sm.subject);
  const queuedOn = h.get(H.requestSubject);
  const parsed = parseRequestSubject(requestsPrefix, queuedOn);
  // Dead letters of earlier versions carry no subject: they were queued on <prefix>.<id>.
  const address = typeof parsed === "string" || parsed.id !== id ? undefined : parsed;
  return {
    id,
    seq: sm.seq,
    subject: address ? queuedOn : subjectFor(requestsPrefix, id),
    tenant: address?.tenant ?? DEFAULT_TENANT,
    priority: address?.priority ?? LEGACY_PRIORITY,
    code: Number(h.get(H.serviceErrorCode) || 0),
    error: h.get(H.serviceError),
    attempts: Number(h.get(H.attempts) || 0),
    failedAt: h.get(H.failedAt),
    headers: h,
    data: sm.data,
  };
}

/** One page of dead letters (see `DeadLetters.page`). */
export interface DeadLetterPage {
  items: DeadLetter[];
  /** the `after` of the next page; absent on the last one */
  next?: number;
}

function storedOf(m: JsMsg): StoredMsg {
  return {
    subject: m.subject,
    seq: m.seq,
    header: m.headers!,
    data: m.data,
    time: new Date(Math.floor(m.info.timestampNanos / 1e6)),
    timestamp: "",
  } as unknown as StoredMsg;
}

export class DeadLetters {
  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly n: DlqNames,
  ) {}

  /** Every dead letter present now, oldest first (a snapshot: bounded by the last sequence at the start). */
  async list(): Promise<DeadLetter[]> {
    const info = await this.jsm.streams.info(this.n.dlqStream);
    const last = info.state.last_seq;
    const out: DeadLetter[] = [];
    if (info.state.messages === 0) return out;
    const c = await jetstream(this.nc).consumers.get(this.n.dlqStream);
    while (out.length < info.state.messages) {
      const m = await c.next({ expires: 2000 });
      if (!m) break;
      if (m.seq > last) break;
      out.push(
        toDeadLetter(
          {
            subject: m.subject,
            seq: m.seq,
            header: m.headers!,
            data: m.data,
            time: new Date(),
            timestamp: "",
          } as unknown as StoredMsg,
          this.n.requestsPrefix,
        ),
      );
      if (m.seq === last) break;
    }
    return out;
  }

  /**
   * At most `limit` dead letters with a sequence above `after`, oldest first, read by an
   * ordered consumer starting there: never more than one page in memory. `next` is the
   * `after` of the following page, undefined on the last one.
   */
  async page(o: { limit: number; after?: number }): Promise<DeadLetterPage> {
    const limit = Math.max(1, Math.floor(o.limit));
    const after = Math.max(0, Math.floor(o.after ?? 0));
    const items: DeadLetter[] = [];
    const c = await jetstream(this.nc).consumers.get(this.n.dlqStream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: after + 1,
    });
    try {
      const pending = (await c.info()).num_pending;
      if (pending === 0) return { items };
      let more = pending > limit;
      // Bounded by the count and by `expires`: dead letters removed meanwhile end the page early.
      const msgs = await c.fetch({ max_messages: Math.min(limit, pending), expires: 2000 });
      for await (const m of msgs) {
        items.push(toDeadLetter(storedOf(m), this.n.requestsPrefix));
        more = m.info.pending > 0;
        if (items.length >= limit || !more) break;
      }
      await msgs.close();
      const last = items.at(-1);
      return more && last ? { items, next: last.seq } : { items };
    } finally {
      await c.delete().catch(() => undefined);
    }
  }

  /** The last sequence the DLQ stream has assigned (0 when it never held anything). */
  async lastSeq(): Promise<number> {
    return (await this.jsm.streams.info(this.n.dlqStream)).state.last_seq;
  }

  /** Deletes the dead letter of `id`; false when there is none. */
  async remove(id: string): Promise<boolean> {
    const d = await this.show(id);
    if (!d) return false;
    return this.jsm.streams.deleteMessage(this.n.dlqStream, d.seq, false).catch((e: unknown) => {
      if (isAlreadyGone(e)) return false;
      throw e;
    });
  }

  /** The dead letter of `id`, or null. */
  async show(id: string): Promise<DeadLetter | null> {
    const sm = await this.jsm.streams.getMessage(this.n.dlqStream, {
      last_by_subj: subjectFor(this.n.dlqPrefix, id),
    });
    return sm ? toDeadLetter(sm, this.n.requestsPrefix) : null;
  }

  /**
   * Puts a dead letter back into the work queue with a fresh Nats-Msg-Id (dedupe
   * outlives the original message), then removes it from the DLQ.
   */
  async replay(d: DeadLetter): Promise<void> {
    const omitted = d.headers.get(H.bodyOmitted);
    if (omitted !== "") {
      throw new NotReplayableError(
        `dead letter ${d.id} has no body: the request (${omitted} bytes) and its failure did not fit in one message under the server's max_payload, so only its headers were kept; resubmit it from its source, and raise max_payload above the stream's max_msg_size to keep whole dead letters`,
      );
    }
    const h = copyHeaders(d.headers);
    for (const k of [H.serviceError, H.serviceErrorCode, H.failedAt, H.attempts]) h.delete(k);
    const key = `${d.id}.replay.${d.seq}`;
    h.set(H.msgId, key);
    h.set(H.replayOf, String(d.seq));
    await jetstream(this.nc).publish(d.subject, d.data, {
      headers: h,
      msgID: key,
    });
    await this.jsm.streams.deleteMessage(this.n.dlqStream, d.seq, false).catch((e: unknown) => {
      // Already gone: the replayed request failed again at once and its new dead letter
      // replaced this one (one dead letter per id).
      if (!isAlreadyGone(e)) throw e;
    });
  }

  /** Deletes every dead letter; returns how many. */
  async purge(): Promise<number> {
    return (await this.jsm.streams.purge(this.n.dlqStream)).purged;
  }
}
