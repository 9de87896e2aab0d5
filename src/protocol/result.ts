/**
 * Encoding of replies, results and error answers (docs/protocol.md), and reading
 * them back on the client side. Pure: no connections.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { H, isJsonType, JSON_TYPE, TEXT_TYPE } from "./headers.js";

/** The parts of a ChatCompletion the proxy reads; the rest is carried as is. */
export interface CompletionLike {
  id?: string;
  model?: string;
  choices?: { message?: { content?: string | null } | null }[];
  usage?: Usage | null;
  [key: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface Encoded {
  headers: MsgHdrs;
  data: Uint8Array;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A header value from outside (the API's answer): control characters become spaces. */
function headerSafe(v: string): string {
  // eslint-disable-next-line no-control-regex
  return v.replace(/[\x00-\x1f\x7f]+/g, " ");
}

/**
 * Bytes a message takes against the server's max_payload: its encoded headers (as
 * nats.js writes them) plus its body.
 */
export function encodedSize(r: Encoded): number {
  let n = "NATS/1.0\r\n\r\n".length;
  for (const [k, vs] of r.headers)
    for (const v of vs) n += 4 + enc.encode(k).length + enc.encode(v).length;
  return n + r.data.length;
}

/** The assistant's text of the first choice ("" when absent). */
export function assistantText(c: CompletionLike): string {
  return c.choices?.[0]?.message?.content ?? "";
}

/** `prompt=12 completion=30 total=42`, the `Openai-Usage` header value. */
export function formatUsage(u: Usage): string {
  return `prompt=${u.prompt_tokens} completion=${u.completion_tokens} total=${u.total_tokens}`;
}

/** Parses an `Openai-Usage` header value; undefined when absent or unreadable. */
export function parseUsage(v: string): Usage | undefined {
  const m = /prompt=(\d+) completion=(\d+) total=(\d+)/.exec(v);
  if (!m) return undefined;
  return {
    prompt_tokens: Number(m[1]),
    completion_tokens: Number(m[2]),
    total_tokens: Number(m[3]),
  };
}

export interface SuccessMeta {
  id: string;
  attempts: number;
  upstreamRequestId?: string | undefined;
}

/**
 * The reply to a successful request: the assistant's text for a text request,
 * the ChatCompletion JSON for a JSON request.
 */
export function encodeSuccess(
  kind: "text" | "json",
  completion: CompletionLike,
  meta: SuccessMeta,
): Encoded {
  const h = baseHeaders(meta.id, meta.attempts);
  if (completion.model) h.set(H.model, headerSafe(completion.model));
  if (meta.upstreamRequestId) h.set(H.requestId, headerSafe(meta.upstreamRequestId));
  if (completion.usage) h.set(H.usage, formatUsage(completion.usage));
  if (kind === "text") {
    h.set(H.contentType, TEXT_TYPE);
    return { headers: h, data: enc.encode(assistantText(completion)) };
  }
  h.set(H.contentType, JSON_TYPE);
  return { headers: h, data: enc.encode(JSON.stringify(completion)) };
}

export interface ErrorMeta {
  id: string;
  attempts: number;
  code: number;
  message: string;
  model?: string | undefined;
}

/**
 * An error answer: `Nats-Service-Error` / `-Code` headers, and a body the caller's
 * format can show (the message for text requests, `{"error":{...}}` for JSON).
 */
export function encodeError(kind: "text" | "json", meta: ErrorMeta): Encoded {
  const h = baseHeaders(meta.id, meta.attempts);
  // Header values cannot hold line breaks.
  const message = meta.message.replace(/[\r\n]+/g, " ");
  h.set(H.serviceError, message);
  h.set(H.serviceErrorCode, String(meta.code));
  if (meta.model) h.set(H.model, headerSafe(meta.model));
  if (kind === "text") {
    h.set(H.contentType, TEXT_TYPE);
    return { headers: h, data: enc.encode(`error ${meta.code}: ${message}`) };
  }
  h.set(H.contentType, JSON_TYPE);
  const body = { error: { code: meta.code, message } };
  return { headers: h, data: enc.encode(JSON.stringify(body)) };
}

/**
 * True when a stored result is a success produced by the request message with stream
 * sequence `seq` (`Proxy-Request-Seq`): that message was answered. Any other result (an
 * error, or another message's success under the same id) says nothing about it.
 */
export function isSuccessOf(h: MsgHdrs | undefined, seq: number): boolean {
  return h !== undefined && h.get(H.serviceErrorCode) === "" && h.get(H.requestSeq) === String(seq);
}

/**
 * True when a stored result is any verdict (success or error) of the request message
 * with stream sequence `seq`: the worker stamps `Proxy-Request-Seq` on both.
 */
export function isResultOf(h: MsgHdrs | undefined, seq: number): boolean {
  return h !== undefined && h.get(H.requestSeq) === String(seq);
}

/** Request headers a result carries back (batch bookkeeping). */
export const CARRIED_HEADERS: readonly string[] = [H.batchId, H.customId];

/** Copies the carried headers of a request onto its result. */
export function carryHeaders(from: MsgHdrs | undefined, to: MsgHdrs): void {
  for (const k of CARRIED_HEADERS) {
    const v = from?.get(k) ?? "";
    if (v !== "") to.set(k, v);
  }
}

function baseHeaders(id: string, attempts: number): MsgHdrs {
  const h = natsHeaders();
  h.set(H.msgId, id);
  h.set(H.attempts, String(attempts));
  return h;
}

/** A reply or stored result as a client sees it. */
export interface ResultView {
  id: string;
  ok: boolean;
  /** error code when !ok */
  code?: number;
  /** error message when !ok */
  error?: string;
  /** the assistant's text (text requests) or the ChatCompletion JSON text */
  body: string;
  /** parsed ChatCompletion when the body is JSON */
  completion?: CompletionLike;
  model?: string;
  usage?: Usage;
  attempts?: number;
  upstreamRequestId?: string;
  /** batch bookkeeping carried from the request */
  batchId?: string;
  customId?: string;
}

/** Reads a reply or result message into a `ResultView`. */
export function readResult(id: string, h: MsgHdrs | undefined, data: Uint8Array): ResultView {
  const get = (k: string) => h?.get(k) ?? "";
  const body = dec.decode(data);
  const view: ResultView = { id, ok: true, body };
  const code = get(H.serviceErrorCode);
  if (code !== "") {
    view.ok = false;
    view.code = Number(code);
    view.error = get(H.serviceError);
  }
  if (get(H.model)) view.model = get(H.model);
  const usage = parseUsage(get(H.usage));
  if (usage) view.usage = usage;
  if (get(H.attempts)) view.attempts = Number(get(H.attempts));
  if (get(H.requestId)) view.upstreamRequestId = get(H.requestId);
  if (get(H.batchId)) view.batchId = get(H.batchId);
  if (get(H.customId)) view.customId = get(H.customId);
  if (view.ok && isJsonType(get(H.contentType))) {
    try {
      view.completion = JSON.parse(body) as CompletionLike;
    } catch {
      // A body that is not JSON stays available as text.
    }
  }
  return view;
}
