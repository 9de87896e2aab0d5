/**
 * Dead-letter operations: list, show, replay (back into the work queue, removing
 * each dead letter only after the requeued copy's PubAck) and purge.
 */
import { jetstream } from "@nats-io/jetstream";
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
