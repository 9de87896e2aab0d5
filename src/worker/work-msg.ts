/**
 * A delivered work-queue message: the part of nats.js's `JsMsg` the worker uses, so
 * the handler works on messages from the lane puller's own pull requests as well as
 * on `JsMsg`s (and on fakes in unit tests).
 */
import type { Msg, MsgHdrs } from "@nats-io/transport-node";

export interface WorkMsgInfo {
  readonly stream: string;
  readonly consumer: string;
  /** 1 on the first delivery */
  readonly deliveryCount: number;
  readonly streamSequence: number;
  /** when the message was stored, in ns since the epoch */
  readonly timestampNanos: number;
  /** messages still waiting in the consumer after this one */
  readonly pending: number;
}

export interface WorkMsg {
  readonly subject: string;
  readonly seq: number;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  readonly redelivered: boolean;
  readonly info: WorkMsgInfo;
  ack(): void;
  /** give it back, redelivered after `millis` (at once without) */
  nak(millis?: number): void;
  /** reset ack_wait: still working on it */
  working(): void;
  term(reason?: string): void;
}

const enc = new TextEncoder();

/**
 * Reads the delivery info from a JetStream ack subject, in the old
 * (`$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<cseq>.<ts>.<pending>`) or the new form
 * (with domain and account hash, and a random suffix).
 * @returns undefined when the subject is not a JetStream ack subject
 */
export function parseAckSubject(reply: string): WorkMsgInfo | undefined {
  const t = reply.split(".");
  if (t.length === 9) t.splice(2, 0, "_", "");
  if (t.length < 11 || t[0] !== "$JS" || t[1] !== "ACK") return undefined;
  const n = (i: number) => Number(t[i]);
  const info = {
    stream: t[4]!,
    consumer: t[5]!,
    deliveryCount: n(6),
    streamSequence: n(7),
    timestampNanos: n(9),
    pending: n(10),
  };
  return Number.isFinite(info.deliveryCount) && Number.isFinite(info.streamSequence)
    ? info
    : undefined;
}

/** A work message for a core message delivered by a pull request, or undefined if it is not one. */
export function toWorkMsg(m: Msg): WorkMsg | undefined {
  const reply = m.reply;
  const info = reply ? parseAckSubject(reply) : undefined;
  if (!reply || !info) return undefined;
  let settled = false;
  // Every acknowledgement but +WPI is final: later ones are ignored, as in nats.js.
  const send = (payload: string, final: boolean) => {
    if (settled) return;
    if (final) settled = true;
    m.respond(enc.encode(payload));
  };
  return {
    subject: m.subject,
    seq: info.streamSequence,
    data: m.data,
    headers: m.headers,
    redelivered: info.deliveryCount > 1,
    info,
    ack: () => send("+ACK", true),
    nak: (millis?: number) =>
      send(
        millis !== undefined && millis > 0
          ? `-NAK ${JSON.stringify({ delay: Math.round(millis * 1e6) })}`
          : "-NAK",
        true,
      ),
    working: () => send("+WPI", false),
    term: (reason?: string) => send(reason ? `+TERM ${reason}` : "+TERM", true),
  };
}
