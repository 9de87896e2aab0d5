/**
 * Tracing of one delivery: the request's W3C traceparent goes on the upstream HTTP call,
 * the reply and the stored result; with an OTLP endpoint configured, spans of the queue
 * wait, the upstream call and the store-and-reply are exported too (otel.ts). Without one
 * the OpenTelemetry SDK is never loaded, and a message without a traceparent costs one
 * header lookup.
 */
import { traceHeaders } from "../protocol/traceparent.js";
import {
  headedChat,
  stampedOutputs,
  type Carried,
  type Tracing,
  type TracingOptions,
} from "./carry.js";

export type { MessageTrace, TracedMsg, Tracing, TracingOptions } from "./carry.js";

/** Propagation only: the caller's trace headers, passed on unchanged. */
function propagation(): Tracing {
  return {
    begin(m) {
      const t = traceHeaders(m.headers);
      if (!t) return undefined;
      const carried: Carried = { traceparent: t.traceparent, tracestate: t.tracestate };
      const http: Record<string, string> = { traceparent: t.traceparent };
      if (t.tracestate !== "") http.tracestate = t.tracestate;
      return {
        chat: (c) => headedChat(c, () => http),
        out: (o) => stampedOutputs(o, carried),
        end: () => undefined,
      };
    },
    shutdown: () => Promise.resolve(),
  };
}

/** Tracing for a configuration; loads the OpenTelemetry SDK only when an endpoint is set. */
export async function createTracing(o: TracingOptions): Promise<Tracing> {
  if (o.endpoint === "") return propagation();
  const { otelTracing } = await import("./otel.js");
  return otelTracing(o);
}
