/**
 * Poison messages: a request that crashed or hung workers until max_deliver gets no
 * verdict from any handler. The server announces it with a MAX_DELIVERIES advisory;
 * one instance (queue group) copies it to the DLQ, answers the caller with an error
 * and removes it from the work queue.
 */
import { isAlreadyGone } from "../nats/errors.js";
import type { NatsConnection } from "@nats-io/transport-node";
import type {
  Consumer,
  JetStreamClient,
  JetStreamManager,
  JsMsg,
  StoredMsg,
} from "@nats-io/jetstream";
import { sleep } from "./sleep.js";
import { Code } from "../protocol/codes.js";
import { H, isJsonType } from "../protocol/headers.js";
import { carryHeaders, encodeError, isResultOf, isSuccessOf } from "../protocol/result.js";
import { idFromSubject, replyToProblem } from "../protocol/subjects.js";
import type { Logger } from "../log.js";
import { deadLetterKey, type Outputs } from "./outputs.js";

export interface PoisonWatchOptions {
  stream: string;
  consumer: string;
  queue: string;
  onPoison?: (id: string) => void;
  /** prefixes a Reply-To may not point into */
  reservedPrefixes?: readonly string[];
}

interface Advisory {
  stream_seq?: number;
  deliveries?: number;
}

export interface PoisonWatcher {
  stop(): void;
}

/**
 * Handles the consumer's MAX_DELIVERIES advisories. When the `OPENAI_POISON` stream
 * captures them (streams/OPENAI_POISON.json), they are read from its durable consumer,
 * so an advisory sent while no proxy runs is not lost; each is acked only after the
 * message is dead-lettered. Without that stream, a core subscription (queue group) is
 * the fallback (advisories sent while no proxy listens are then lost: run streams apply).
 */
export async function watchPoison(
  nc: NatsConnection,
  js: JetStreamClient,
  jsm: JetStreamManager,
  out: Outputs,
  o: PoisonWatchOptions & { poisonStream: string; poisonConsumer: string },
  log: Logger,
): Promise<PoisonWatcher> {
  const settle = (a: Advisory) =>
    deadLetterPoison(jsm, out, o, a.stream_seq!, a.deliveries ?? 0, log);
  let consumer: Consumer | undefined;
  try {
    await jsm.consumers.info(o.poisonStream, o.poisonConsumer);
    consumer = await js.consumers.get(o.poisonStream, o.poisonConsumer);
  } catch {
    log.warn(
      { stream: o.poisonStream },
      "no poison-advisory stream: falling back to a core subscription (run streams apply)",
    );
  }
  if (!consumer) {
    const sub = nc.subscribe(
      `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${o.stream}.${o.consumer}`,
      {
        queue: o.queue,
        callback: (err, msg) => {
          if (err) return;
          const a = parseAdvisory(msg.data);
          if (a)
            void settle(a).catch((e: unknown) =>
              log.error({ err: e, seq: a.stream_seq }, "could not dead-letter a poison message"),
            );
        },
      },
    );
    return { stop: () => sub.unsubscribe() };
  }
  const c = consumer;
  let running = true;
  void (async () => {
    while (running) {
      let m: JsMsg | null = null;
      try {
        m = await c.next({ expires: 5000 });
      } catch (e) {
        log.debug({ err: e }, "poison advisory pull failed");
        await sleep(1000);
        continue;
      }
      if (!m) continue;
      const a = parseAdvisory(m.data);
      try {
        if (a) await settle(a);
        m.ack();
      } catch (e) {
        log.error(
          { err: e, seq: a?.stream_seq },
          "could not dead-letter a poison message; will retry",
        );
        m.nak(5000);
      }
    }
  })();
  return {
    stop: () => {
      running = false;
    },
  };
}

function parseAdvisory(data: Uint8Array): Advisory | undefined {
  try {
    const a = JSON.parse(new TextDecoder().decode(data)) as Advisory;
    return typeof a.stream_seq === "number" ? a : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Settles the message a MAX_DELIVERIES advisory names (by its stream sequence).
 * Exported for tests.
 */
export async function deadLetterPoison(
  jsm: JetStreamManager,
  out: Outputs,
  o: PoisonWatchOptions,
  seq: number,
  deliveries: number,
  log: Logger,
): Promise<void> {
  const sm = await jsm.streams.getMessage(o.stream, { seq });
  if (!sm) return; // already settled (a late ack)
  const done = await settledBefore(out, sm);
  if (done) {
    // Its verdict is stored and was replied; only the ack was lost. Never overwrite it.
    await deleteQuietly(jsm, o.stream, seq);
    log.info(
      { id: idFromSubject(sm.subject), seq, deliveries },
      done === "answered"
        ? "max-delivered message was already answered (its ack was lost): removed from the queue"
        : "max-delivered message was already dead-lettered with its own error (its ack was lost): removed from the queue",
    );
    return;
  }
  await deadLetterStored(jsm, out, o, sm, deliveries, log);
}

/**
 * Whether this very message was settled and only its ack was lost: its success is stored
 * (see isSuccessOf), or its error verdict is stored together with its dead letter (the
 * key `<id>.dlq.<seq>` the worker writes it under). Anything else proves nothing.
 */
async function settledBefore(
  out: Outputs,
  sm: StoredMsg,
): Promise<"answered" | "dead-lettered" | undefined> {
  const id = idFromSubject(sm.subject);
  const prev = await out.lookupResult(id);
  if (isSuccessOf(prev?.headers, sm.seq)) return "answered";
  if (!isResultOf(prev?.headers, sm.seq)) return undefined;
  // Not allowed to read the DLQ (an older permission set): prove nothing, dead-letter it.
  const dl = await out.lookupDeadLetter(id).catch(() => null);
  return dl?.headers?.get(H.msgId) === deadLetterKey(id, sm.seq) ? "dead-lettered" : undefined;
}

async function deadLetterStored(
  jsm: JetStreamManager,
  out: Outputs,
  o: PoisonWatchOptions,
  sm: StoredMsg,
  deliveries: number,
  log: Logger,
): Promise<void> {
  const seq = sm.seq;
  const id = idFromSubject(sm.subject);
  const message = `poison: delivered ${deliveries} times and no worker finished it (it crashed or hung the worker each time); inspect it with "nats-openai-proxy dlq show ${id}"`;
  const original = { headers: sm.header, data: sm.data };
  await out.deadLetter(id, deadLetterKey(id, seq), original, {
    code: Code.internal,
    message,
    attempts: deliveries,
    subject: sm.subject,
  });
  const kind = isJsonType(sm.header.get(H.contentType)) ? "json" : "text";
  const err = encodeError(kind, { id, attempts: deliveries, code: Code.internal, message });
  carryHeaders(sm.header, err.headers);
  err.headers.set(H.requestSeq, String(seq));
  await out.storeResult(id, err);
  const replyTo = sm.header.get(H.replyTo);
  if (replyTo && !replyToProblem(replyTo, o.reservedPrefixes ?? [])) out.reply(replyTo, err);
  await deleteQuietly(jsm, o.stream, seq);
  log.warn({ id, seq, deliveries }, "poison message dead-lettered");
  o.onPoison?.(id);
}

async function deleteQuietly(jsm: JetStreamManager, stream: string, seq: number): Promise<void> {
  await jsm.streams.deleteMessage(stream, seq, false).catch((e: unknown) => {
    if (!isAlreadyGone(e)) throw e;
  });
}
