/**
 * The pieces both tracing modes share: the message and trace interfaces, and decorators
 * that put trace headers on results, replies and upstream calls.
 */
import type { MsgHdrs } from "@nats-io/transport-node";
import type { ChatClient } from "../llm/chat-client.js";
import { H, STREAM_DELTA } from "../protocol/headers.js";
import type { Encoded } from "../protocol/result.js";
import type { Finished } from "../worker/handle.js";
import type { Logger } from "../log.js";
import type { Outputs } from "../worker/outputs.js";

/** What tracing needs of a delivered message (a JsMsg has it). */
export interface TracedMsg {
  readonly subject: string;
  readonly seq: number;
  readonly headers?: MsgHdrs | undefined;
  readonly info: { readonly timestampNanos: number; readonly deliveryCount: number };
}

/** One delivery's trace: decorates its ChatClient and Outputs, and ends with its outcome. */
export interface MessageTrace {
  chat(c: ChatClient): ChatClient;
  out(o: Outputs): Outputs;
  end(f: Finished): void;
}

export interface Tracing {
  /** The trace of a delivery; undefined when there is nothing to carry or record. */
  begin(m: TracedMsg): MessageTrace | undefined;
  /** Exports what is pending and stops (idempotent). */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** OTLP/HTTP base URL ("" = no export) */
  endpoint: string;
  serviceName: string;
  log: Logger;
}

/** The trace headers a result and a reply carry. */
export type Carried = Readonly<{ traceparent: string; tracestate: string }>;

/** Sets the trace headers on a result or reply (not on stream deltas). */
export function stamp(r: Encoded, c: Carried): void {
  if (r.headers.get(H.stream) === STREAM_DELTA) return;
  r.headers.set(H.traceparent, c.traceparent);
  if (c.tracestate !== "") r.headers.set(H.tracestate, c.tracestate);
}

/** Outputs whose results and replies carry `c`; `onSettle` runs before the first store. */
export function stampedOutputs(o: Outputs, c: Carried, onSettle?: () => void): Outputs {
  return {
    storeResult(id, r, expectLastSeq) {
      onSettle?.();
      stamp(r, c);
      return o.storeResult(id, r, expectLastSeq);
    },
    reply(subject, r) {
      stamp(r, c);
      o.reply(subject, r);
    },
    flush: () => o.flush(),
    lookupResult: (id) => o.lookupResult(id),
    lookupDeadLetter: (id) => o.lookupDeadLetter(id),
    deadLetter(id, key, original, failure) {
      onSettle?.();
      return o.deadLetter(id, key, original, failure);
    },
    requeue: (id, key, original) => o.requeue(id, key, original),
  };
}

/** A ChatClient whose calls carry `headers()` (evaluated per call). */
export function headedChat(c: ChatClient, headers: () => Record<string, string>): ChatClient {
  return {
    complete: (params, opts = {}) =>
      c.complete(params, { ...opts, headers: { ...opts.headers, ...headers() } }),
    probe: (signal) => c.probe(signal),
  };
}
