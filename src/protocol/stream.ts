/**
 * Streamed answers as readers see them (docs/protocol.md, "Streams that survive a
 * disconnect"): the event a reader gets when a redelivered attempt starts over, and the
 * chunks that replay a finished completion (a cache hit streams this way). Pure.
 */
import type { CompletionLike } from "./result.js";

/**
 * Yielded by the client's `stream()` / `resume()` when the proxy restarted the answer
 * (a worker died mid-stream): drop every chunk received so far, the text starts again.
 */
export interface StreamRestart {
  readonly object: "nats-openai-proxy.stream.restart";
  /** the delivery attempt that starts over (Proxy-Attempts) */
  readonly attempt: number;
}

/** A restart event. */
export function streamRestart(attempt: number): StreamRestart {
  return { object: "nats-openai-proxy.stream.restart", attempt };
}

/** True for the restart event of `stream()` / `resume()`. */
export function isStreamRestart(x: unknown): x is StreamRestart {
  return (
    typeof x === "object" &&
    x !== null &&
    (x as { object?: unknown }).object === "nats-openai-proxy.stream.restart"
  );
}

/** The content text of a `chat.completion.chunk` (first choice), "" when none. */
export function chunkText(chunk: unknown): string {
  const c = chunk as { choices?: { delta?: { content?: unknown } }[] } | null;
  const t = c?.choices?.[0]?.delta?.content;
  return typeof t === "string" ? t : "";
}

interface ChoiceLike {
  index?: number;
  message?: { role?: string; content?: string | null; [k: string]: unknown } | null;
  finish_reason?: string | null;
}

/**
 * `chat.completion.chunk`s that replay a finished completion: one content delta per
 * choice, then one closing the choices with their finish reason.
 */
export function completionChunks(c: CompletionLike): unknown[] {
  const base = {
    id: c.id ?? "",
    object: "chat.completion.chunk",
    created: typeof c.created === "number" ? c.created : Math.floor(Date.now() / 1000),
    model: c.model ?? "",
  };
  const choices = (c.choices ?? []) as ChoiceLike[];
  const content = choices.map((ch, i) => ({
    index: ch.index ?? i,
    delta: { role: ch.message?.role ?? "assistant", content: ch.message?.content ?? "" },
    logprobs: null,
    finish_reason: null,
  }));
  const end = choices.map((ch, i) => ({
    index: ch.index ?? i,
    delta: {},
    logprobs: null,
    finish_reason: ch.finish_reason ?? "stop",
  }));
  return [
    { ...base, choices: content },
    { ...base, choices: end },
  ];
}
