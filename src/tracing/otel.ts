/**
 * OpenTelemetry spans of each delivery, exported over OTLP/HTTP (JSON) to
 * `tracing.otlp_endpoint`: the queue wait, each upstream call (GenAI semantic conventions)
 * and the store-and-reply, children of the caller's span from the request's traceparent.
 * Loaded by tracing.ts only when an endpoint is configured. No global provider or context
 * manager is registered: the parent is always passed explicitly.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  createTraceState,
  trace,
  type Attributes,
  type Context,
  type Span,
} from "@opentelemetry/api";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { UpstreamError, type ChatClient } from "../llm/chat-client.js";
import { formatTraceparent, traceHeaders } from "../protocol/traceparent.js";
import { idFromSubject } from "../protocol/subjects.js";
import { VERSION } from "../version.js";
import {
  headedChat,
  stampedOutputs,
  type Carried,
  type MessageTrace,
  type TracedMsg,
  type Tracing,
  type TracingOptions,
} from "./carry.js";

/** How often finished spans are sent (the SDK's default is 5 s). */
const EXPORT_DELAY_MS = 1000;

/** `<endpoint>/v1/traces`, as OTEL_EXPORTER_OTLP_ENDPOINT means it. */
export function tracesUrl(endpoint: string): string {
  const e = endpoint.replace(/\/+$/, "");
  return e.endsWith("/v1/traces") ? e : `${e}/v1/traces`;
}

/** The URL without user info, for a log line. */
function shown(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(unparseable URL)";
  }
}

function traceparentOf(s: Span): string {
  const c = s.spanContext();
  return formatTraceparent({ traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags });
}

/** Tracing that exports spans; see the module comment. */
export function otelTracing(o: TracingOptions): Tracing {
  const url = tracesUrl(o.endpoint);
  const exporter = new OTLPTraceExporter({ url });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: o.serviceName,
      [ATTR_SERVICE_VERSION]: VERSION,
    }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: EXPORT_DELAY_MS })],
  });
  const tracer = provider.getTracer("nats-openai-proxy", VERSION);
  o.log.info({ otlp: shown(url) }, "tracing: exporting spans over OTLP/HTTP");
  let stopped: Promise<void> | undefined;

  const chatSpans = (c: ChatClient, parent: Context, tracestate: string): ChatClient => ({
    async complete(params, opts = {}) {
      const model = params.model;
      const attrs: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": model,
      };
      const p = params as Record<string, unknown>;
      for (const [k, a] of [
        ["max_tokens", "gen_ai.request.max_tokens"],
        ["max_completion_tokens", "gen_ai.request.max_tokens"],
        ["temperature", "gen_ai.request.temperature"],
        ["top_p", "gen_ai.request.top_p"],
      ] as const)
        if (typeof p[k] === "number") attrs[a] = p[k];
      const span = tracer.startSpan(
        `chat ${model}`,
        { kind: SpanKind.CLIENT, attributes: attrs },
        parent,
      );
      const http: Record<string, string> = { traceparent: traceparentOf(span) };
      if (tracestate !== "") http.tracestate = tracestate;
      try {
        const r = await headedChat(c, () => http).complete(params, opts);
        const u = r.completion.usage;
        span.setAttributes({
          ...(r.completion.model ? { "gen_ai.response.model": r.completion.model } : {}),
          ...(r.completion.id ? { "gen_ai.response.id": r.completion.id } : {}),
          ...(u
            ? {
                "gen_ai.usage.input_tokens": u.prompt_tokens,
                "gen_ai.usage.output_tokens": u.completion_tokens,
              }
            : {}),
        });
        return r;
      } catch (e) {
        const type =
          e instanceof UpstreamError
            ? e.status !== undefined
              ? String(e.status)
              : e.kind
            : "error";
        span.setAttribute("error.type", type);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
        throw e;
      } finally {
        span.end();
      }
    },
    probe: (signal) => c.probe(signal),
  });

  return {
    begin(m: TracedMsg): MessageTrace {
      const now = Date.now();
      const id = idFromSubject(m.subject);
      const incoming = traceHeaders(m.headers);
      let root: Span | undefined;
      let parent: Context;
      let carried: Carried;
      if (incoming) {
        parent = trace.setSpanContext(ROOT_CONTEXT, {
          traceId: incoming.parent.traceId,
          spanId: incoming.parent.spanId,
          traceFlags: incoming.parent.flags,
          isRemote: true,
          ...(incoming.tracestate ? { traceState: createTraceState(incoming.tracestate) } : {}),
        });
        carried = { traceparent: incoming.traceparent, tracestate: incoming.tracestate };
      } else {
        // No caller's trace: one of our own, so the three spans still belong together.
        root = tracer.startSpan("openai.request", { kind: SpanKind.CONSUMER }, ROOT_CONTEXT);
        parent = trace.setSpan(ROOT_CONTEXT, root);
        carried = { traceparent: traceparentOf(root), tracestate: "" };
      }
      const messaging: Attributes = {
        "messaging.system": "nats",
        "messaging.destination.name": m.subject,
        "messaging.message.id": id,
      };
      const enqueued = Math.min(now, Math.floor(m.info.timestampNanos / 1e6));
      tracer
        .startSpan(
          "queue wait",
          {
            kind: SpanKind.CONSUMER,
            startTime: enqueued,
            attributes: {
              ...messaging,
              "messaging.operation.type": "receive",
              "messaging.nats.delivery": m.info.deliveryCount,
              "messaging.nats.stream.sequence": m.seq,
            },
          },
          parent,
        )
        .end(now);
      let settle: Span | undefined;
      return {
        chat: (c) => chatSpans(c, parent, carried.tracestate),
        out: (out) =>
          stampedOutputs(out, carried, () => {
            settle ??= tracer.startSpan(
              "store and reply",
              {
                kind: SpanKind.PRODUCER,
                attributes: { ...messaging, "messaging.operation.type": "send" },
              },
              parent,
            );
          }),
        end(f) {
          const attrs: Attributes = { "proxy.outcome": f.outcome, "proxy.attempts": f.attempts };
          if (f.code !== undefined) attrs["error.type"] = String(f.code);
          if (settle) {
            settle.setAttributes(attrs);
            if (f.outcome === "error")
              settle.setStatus({ code: SpanStatusCode.ERROR, message: f.error ?? "" });
            settle.end();
          }
          if (root) {
            root.setAttributes({ ...messaging, ...attrs });
            root.end();
          }
        },
      };
    },
    shutdown() {
      stopped ??= provider.shutdown().catch((e: unknown) => {
        o.log.warn({ err: e }, "tracing: could not export the last spans");
      });
      return stopped;
    },
  };
}
