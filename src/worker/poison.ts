/**
 * Poison messages: a request that crashed or hung workers until max_deliver gets no
 * verdict from any handler. The server announces it with a MAX_DELIVERIES advisory;
 * one instance (queue group) copies it to the DLQ, answers the caller with an error
 * and removes it from the work queue.
 */
import type { JetStreamManager, NatsConnection, Subscription } from "nats";
import { Code } from "../protocol/codes.js";
import { H, JSON_TYPE } from "../protocol/headers.js";
import { encodeError } from "../protocol/result.js";
import { idFromSubject } from "../protocol/subjects.js";
import type { Logger } from "../log.js";
import type { Outputs } from "./outputs.js";

export interface PoisonWatchOptions {
  stream: string;
  consumer: string;
  queue: string;
  onPoison?: (id: string) => void;
}

/** Subscribes to the consumer's MAX_DELIVERIES advisories. */
export function watchPoison(
  nc: NatsConnection,
  jsm: JetStreamManager,
  out: Outputs,
  o: PoisonWatchOptions,
  log: Logger,
): Subscription {
  const subject = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${o.stream}.${o.consumer}`;
  return nc.subscribe(subject, {
    queue: o.queue,
    callback: (err, msg) => {
      if (err) return;
      let a: { stream_seq?: number; deliveries?: number };
      try {
        a = msg.json();
      } catch {
        return;
      }
      if (typeof a.stream_seq !== "number") return;
      void deadLetterPoison(jsm, out, o, a.stream_seq, a.deliveries ?? 0, log).catch((e: unknown) =>
        log.error({ err: e, seq: a.stream_seq }, "could not dead-letter a poison message"),
      );
    },
  });
}

async function deadLetterPoison(
  jsm: JetStreamManager,
  out: Outputs,
  o: PoisonWatchOptions,
  seq: number,
  deliveries: number,
  log: Logger,
): Promise<void> {
  let sm;
  try {
    sm = await jsm.streams.getMessage(o.stream, { seq });
  } catch (e) {
    if ((e as { code?: string }).code === "404") return; // already settled (a late ack)
    throw e;
  }
  const id = idFromSubject(sm.subject);
  const message = `poison: delivered ${deliveries} times and no worker finished it (it crashed or hung the worker each time); inspect it with "nats-openai-proxy dlq show ${id}"`;
  const original = { headers: sm.header, data: sm.data };
  await out.deadLetter(id, `${id}.dlq.${seq}`, original, {
    code: Code.internal,
    message,
    attempts: deliveries,
  });
  const kind = sm.header.get(H.contentType).startsWith(JSON_TYPE) ? "json" : "text";
  const err = encodeError(kind, { id, attempts: deliveries, code: Code.internal, message });
  await out.storeResult(id, err);
  const replyTo = sm.header.get(H.replyTo);
  if (replyTo) out.reply(replyTo, err);
  await jsm.streams.deleteMessage(o.stream, seq, false).catch((e: unknown) => {
    if ((e as { code?: string }).code !== "500") throw e; // already gone
  });
  log.warn({ id, seq, deliveries }, "poison message dead-lettered");
  o.onPoison?.(id);
}
