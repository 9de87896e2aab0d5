/**
 * Decoding of request bodies: the original plain-text prompt, or Chat Completions
 * create params as JSON. Pure: no NATS, no SDK.
 */
import { Code, RequestError } from "./codes.js";
import { isJsonType } from "./headers.js";

/** The subset of Chat Completions params the proxy looks at; the rest passes through. */
export interface ChatParams {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: string;
  content?: unknown;
  [key: string]: unknown;
}

/**
 * `text`: the original format, one user message; the reply is the assistant's text.
 * `json`: Chat Completions params; the reply is the ChatCompletion JSON.
 */
export interface DecodedRequest {
  kind: "text" | "json";
  params: ChatParams;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes a request body.
 * @param data the message payload
 * @param contentType the `Content-Type` header, or "" when absent
 * @param defaultModel the model used when the request names none
 * @throws RequestError (400) naming what is wrong with the body
 */
export function decodeRequest(
  data: Uint8Array,
  contentType: string,
  defaultModel: string,
): DecodedRequest {
  if (data.length === 0) {
    throw new RequestError(
      Code.badRequest,
      "empty request body: send a prompt as text or Chat Completions JSON with messages",
    );
  }
  let text: string;
  try {
    text = utf8.decode(data);
  } catch (cause) {
    throw new RequestError(
      Code.badRequest,
      "request body is not valid UTF-8 text: send a UTF-8 prompt or JSON (binary is not accepted)",
      { cause },
    );
  }
  const declaredJson = isJsonType(contentType);
  const trimmed = text.trim();
  if (declaredJson) return { kind: "json", params: parseParams(trimmed, defaultModel) };
  // Without a content type, only an object that has `messages` is JSON: a prompt that
  // merely starts with "{" stays a prompt, as in the original tool.
  if (trimmed.startsWith("{")) {
    let obj: unknown;
    try {
      obj = JSON.parse(trimmed);
    } catch {
      obj = undefined;
    }
    if (isObject(obj) && "messages" in obj) {
      return { kind: "json", params: validateParams(obj, defaultModel) };
    }
  }
  if (trimmed.length === 0) {
    throw new RequestError(Code.badRequest, "request body is only whitespace: send a prompt");
  }
  return {
    kind: "text",
    params: { model: defaultModel, messages: [{ role: "user", content: text }] },
  };
}

function parseParams(text: string, defaultModel: string): ChatParams {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new RequestError(
      Code.badRequest,
      `unparseable JSON (${why}): send Chat Completions params such as {"messages":[{"role":"user","content":"hi"}]}`,
      { cause },
    );
  }
  return validateParams(obj, defaultModel);
}

type FieldCheck = [string, (v: unknown) => boolean, string];

// Model names travel in a header (Openai-Model) and in subjects of the rate limiter: no
// whitespace or control characters. This covers OpenAI's names and fine-tunes
// (ft:gpt-4o-mini:org::id), Hugging Face ids (meta-llama/Llama-3.1-8B), Ollama tags
// (llama3.1:8b) and LiteLLM routes (openai/gpt-4o, vertex_ai/gemini-1.5-pro@001).
const MODEL_RE = /^[A-Za-z0-9._:/@+-]{1,256}$/;

const isNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);
const isInt = (v: unknown) => Number.isInteger(v);
const isStr = (v: unknown) => typeof v === "string";
const isBool = (v: unknown) => typeof v === "boolean";

// Type checks on the fields the API would reject anyway: failing here is cheaper and
// the message can name the field.
const FIELD_CHECKS: FieldCheck[] = [
  ["stream", isBool, "a boolean"],
  ["temperature", isNum, "a number"],
  ["top_p", isNum, "a number"],
  ["presence_penalty", isNum, "a number"],
  ["frequency_penalty", isNum, "a number"],
  ["max_tokens", isInt, "an integer"],
  ["max_completion_tokens", isInt, "an integer"],
  ["n", isInt, "an integer"],
  ["seed", isInt, "an integer"],
  ["user", isStr, "a string"],
  ["stop", (v) => isStr(v) || (Array.isArray(v) && v.every(isStr)), "a string or array of strings"],
  ["tools", Array.isArray, "an array"],
  ["response_format", isObject, "an object"],
  ["stream_options", isObject, "an object"],
  ["metadata", isObject, "an object"],
];

/**
 * Validates Chat Completions params and fills in the default model.
 * @throws RequestError (400) naming the field to fix
 */
export function validateParams(obj: unknown, defaultModel: string): ChatParams {
  if (!isObject(obj)) {
    throw new RequestError(
      Code.badRequest,
      `request JSON must be an object with "messages", got ${describe(obj)}`,
    );
  }
  const model = obj.model ?? defaultModel;
  if (typeof model !== "string" || model.length === 0) {
    throw new RequestError(
      Code.badRequest,
      `"model" must be a non-empty string, got ${describe(obj.model)}`,
    );
  }
  if (!MODEL_RE.test(model)) {
    throw new RequestError(
      Code.badRequest,
      model.length > 256
        ? `"model" is ${model.length} characters long; the limit is 256`
        : `"model" may only contain letters, digits and . _ : / @ + - (no whitespace or control characters), got ${describe(model)}`,
    );
  }
  const messages = obj.messages;
  if (messages === undefined) {
    throw new RequestError(
      Code.badRequest,
      'no messages: the JSON needs "messages": [{"role":"user","content":"..."}]',
    );
  }
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new RequestError(
      Code.badRequest,
      `"messages" must be a non-empty array, got ${describe(messages)}`,
    );
  }
  messages.forEach((m: unknown, i) => {
    if (!isObject(m) || typeof m.role !== "string") {
      throw new RequestError(
        Code.badRequest,
        `messages[${i}] must be an object with a string "role", got ${describe(m)}`,
      );
    }
    const c = m.content;
    if (c !== undefined && c !== null && typeof c !== "string" && !Array.isArray(c)) {
      throw new RequestError(
        Code.badRequest,
        `messages[${i}].content must be a string or an array of content parts, got ${describe(c)}`,
      );
    }
  });
  for (const [field, ok, what] of FIELD_CHECKS) {
    const v = obj[field];
    if (v !== undefined && v !== null && !ok(v)) {
      throw new RequestError(Code.badRequest, `"${field}" must be ${what}, got ${describe(v)}`);
    }
  }
  return { ...obj, model, messages: messages as ChatMessage[] };
}

/**
 * Parses `Expires-At`: RFC 3339 or epoch milliseconds.
 * @returns epoch ms, or undefined when the header is absent
 * @throws RequestError (400) when present but unreadable
 */
export function parseExpiresAt(value: string): number | undefined {
  const v = value.trim();
  if (v === "") return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$/;
  const t = rfc3339.test(v) ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) {
    throw new RequestError(
      Code.badRequest,
      `Expires-At "${v.slice(0, 40)}" is neither RFC 3339 (2026-01-02T15:04:05Z) nor epoch milliseconds`,
    );
  }
  return t;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return v.length === 0 ? "an empty array" : "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.slice(0, 30))}`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v) ?? typeof v}`;
}
