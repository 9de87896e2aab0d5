/**
 * `ChatClient` on the official `openai` SDK. SDK retries are off: the worker has the
 * one retry policy. Streaming calls are folded back into one ChatCompletion. Every call
 * is bounded in time (call-guard.ts): the SDK's timeout stops at the response headers.
 */
import OpenAI from "openai";
import type { ChatParams } from "../protocol/request.js";
import type { CompletionLike, Usage } from "../protocol/result.js";
import { scrub } from "../config/redact.js";
import { guardCall, type CallGuard, type Expiry } from "./call-guard.js";
import {
  UpstreamError,
  type ChatCallOptions,
  type ChatClient,
  type ChatResult,
} from "./chat-client.js";

export interface OpenAIClientOptions {
  apiKey: string;
  baseURL?: string | undefined;
  timeoutMs: number;
  /** a streamed answer silent this long (after its headers, between chunks) is cut */
  streamIdleTimeoutMs?: number;
  /** the longest one call may take, body included */
  callDeadlineMs?: number;
  fetch?: typeof fetch;
}

const DEFAULT_IDLE_MS = 30_000;
const DEFAULT_DEADLINE_MS = 600_000;

/** The real API (or any OpenAI-compatible server at `baseURL`). */
export function createOpenAIClient(o: OpenAIClientOptions): ChatClient {
  const client = new OpenAI({
    // Local compatible servers often need no key, but the SDK insists on one.
    apiKey: o.apiKey || "no-key",
    ...(o.baseURL ? { baseURL: o.baseURL } : {}),
    timeout: o.timeoutMs,
    maxRetries: 0,
    ...(o.fetch ? { fetch: o.fetch } : {}),
  });
  const secrets = [o.apiKey];
  const limits = {
    idleMs: o.streamIdleTimeoutMs ?? DEFAULT_IDLE_MS,
    deadlineMs: o.callDeadlineMs ?? DEFAULT_DEADLINE_MS,
    onAbort: () => new OpenAI.APIUserAbortError(),
  };
  // A limit that cut the call wins over whatever the SDK made of the abort.
  const wrap = (e: unknown, g: CallGuard) =>
    g.expired ? expiredError(g.expired, limits) : toUpstreamError(e, secrets);

  return {
    async complete(params: ChatParams, opts: ChatCallOptions = {}): Promise<ChatResult> {
      const g = guardCall(opts.signal, limits);
      try {
        if (params.stream && opts.onDelta) return await streamed(client, params, opts, g);
        const body = {
          ...params,
          stream: false,
        } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
        const { data, response } = await g.race(
          client.chat.completions
            .create(body, { signal: g.signal, ...(opts.headers ? { headers: opts.headers } : {}) })
            .withResponse(),
        );
        return {
          completion: data as unknown as CompletionLike,
          upstreamRequestId: response.headers.get("x-request-id") ?? undefined,
          rateHeaders: rateHeaders(response.headers),
        };
      } catch (e) {
        throw wrap(e, g);
      } finally {
        g.dispose();
      }
    },
    async probe(signal?: AbortSignal): Promise<void> {
      const g = guardCall(signal, limits);
      try {
        await g.race(client.models.list({ signal: g.signal }));
      } catch (e) {
        throw wrap(e, g);
      } finally {
        g.dispose();
      }
    },
  };
}

function expiredError(why: Expiry, l: { idleMs: number; deadlineMs: number }): UpstreamError {
  const message =
    why === "idle"
      ? `upstream stream stalled: no data for ${l.idleMs} ms (openai.stream_idle_timeout_ms)`
      : `upstream call took longer than ${l.deadlineMs} ms (openai.call_deadline_ms)`;
  return new UpstreamError(message, "timeout", undefined, {});
}

async function streamed(
  client: OpenAI,
  params: ChatParams,
  opts: ChatCallOptions,
  g: CallGuard,
): Promise<ChatResult> {
  const body = {
    ...params,
    stream: true,
    stream_options: { include_usage: true, ...(params.stream_options as object | undefined) },
  } as unknown as OpenAI.ChatCompletionCreateParamsStreaming;
  const { data: stream, response } = await g.race(
    client.chat.completions
      .create(body, { signal: g.signal, ...(opts.headers ? { headers: opts.headers } : {}) })
      .withResponse(),
  );
  const acc = new Accumulator();
  const chunks = stream[Symbol.asyncIterator]();
  g.touch();
  try {
    for (;;) {
      const r = await g.race(chunks.next());
      if (r.done) break;
      g.touch();
      acc.add(r.value);
      opts.onDelta?.(r.value);
    }
  } finally {
    if (g.signal.aborted) stream.controller.abort();
  }
  // The SDK ends an aborted stream quietly, as if it were complete: a cut answer is none.
  if (g.signal.aborted) throw new OpenAI.APIUserAbortError();
  return {
    completion: acc.result(params.model),
    upstreamRequestId: response.headers.get("x-request-id") ?? undefined,
    rateHeaders: rateHeaders(response.headers),
  };
}

/** The x-ratelimit-* response headers, lower-case. */
function rateHeaders(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => {
    if (k.startsWith("x-ratelimit-")) out[k.toLowerCase()] = v;
  });
  return out;
}

interface ChoiceAcc {
  content: string;
  refusal: string | null;
  sawContent: boolean;
  role: string;
  finish_reason: string | null;
  tool_calls: { id?: string; type?: string; function: { name: string; arguments: string } }[];
}

/** Folds chat.completion.chunk objects into the ChatCompletion a non-streaming call returns. */
export class Accumulator {
  private id = "";
  private model = "";
  private created = 0;
  private fingerprint: string | null = null;
  private usage: Usage | null = null;
  private readonly choices = new Map<number, ChoiceAcc>();

  add(chunk: OpenAI.ChatCompletionChunk): void {
    this.id ||= chunk.id;
    this.model ||= chunk.model;
    this.created ||= chunk.created;
    this.fingerprint ??= chunk.system_fingerprint ?? null;
    if (chunk.usage) this.usage = chunk.usage;
    for (const c of chunk.choices) {
      let a = this.choices.get(c.index);
      if (!a) {
        a = {
          content: "",
          refusal: null,
          sawContent: false,
          role: "assistant",
          finish_reason: null,
          tool_calls: [],
        };
        this.choices.set(c.index, a);
      }
      if (c.delta.role) a.role = c.delta.role;
      if (typeof c.delta.content === "string") {
        a.content += c.delta.content;
        a.sawContent = true;
      }
      if (c.delta.refusal) a.refusal = (a.refusal ?? "") + c.delta.refusal;
      if (c.finish_reason) a.finish_reason = c.finish_reason;
      for (const t of c.delta.tool_calls ?? []) {
        const slot = (a.tool_calls[t.index] ??= { function: { name: "", arguments: "" } });
        if (t.id) slot.id = t.id;
        if (t.type) slot.type = t.type;
        if (t.function?.name) slot.function.name += t.function.name;
        if (t.function?.arguments) slot.function.arguments += t.function.arguments;
      }
    }
  }

  result(fallbackModel: string): CompletionLike {
    const choices = [...this.choices.entries()]
      .sort(([x], [y]) => x - y)
      .map(([index, a]) => ({
        index,
        message: {
          role: a.role,
          // A reply made only of tool calls has content null, as in a non-streamed call.
          content:
            a.sawContent && (a.content !== "" || a.tool_calls.length === 0)
              ? a.content
              : a.tool_calls.length > 0
                ? null
                : a.content,
          refusal: a.refusal,
          ...(a.tool_calls.length > 0 ? { tool_calls: a.tool_calls } : {}),
        },
        logprobs: null,
        finish_reason: a.finish_reason ?? "stop",
      }));
    return {
      id: this.id,
      object: "chat.completion",
      created: this.created,
      model: this.model || fallbackModel,
      system_fingerprint: this.fingerprint,
      choices,
      usage: this.usage,
    };
  }
}

/** Turns whatever the SDK threw into an `UpstreamError`, with secrets scrubbed. */
export function toUpstreamError(e: unknown, secrets: string[]): UpstreamError {
  if (e instanceof UpstreamError) return e;
  if (e instanceof OpenAI.APIUserAbortError) {
    return new UpstreamError("upstream call aborted", "aborted", undefined, {}, { cause: e });
  }
  if (e instanceof OpenAI.APIConnectionTimeoutError) {
    return new UpstreamError(
      "upstream call timed out (openai.timeout_ms)",
      "timeout",
      undefined,
      {},
      { cause: e },
    );
  }
  if (e instanceof OpenAI.APIConnectionError) {
    const why = e.cause instanceof Error ? `: ${e.cause.message}` : "";
    return new UpstreamError(
      scrub(`cannot reach the API${why}`, secrets),
      "connection",
      undefined,
      {},
      { cause: e },
    );
  }
  if (e instanceof OpenAI.APIError) {
    const headers: Record<string, string> = {};
    const h = e.headers as Headers | undefined;
    h?.forEach((v, k) => {
      headers[k.toLowerCase()] = v;
    });
    const inner = (e.error as { message?: string } | undefined)?.message ?? e.message;
    return new UpstreamError(
      scrub(inner, secrets),
      "http",
      e.status as number | undefined,
      headers,
    );
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new UpstreamError(scrub(msg, secrets), "connection", undefined, {}, { cause: e });
}
