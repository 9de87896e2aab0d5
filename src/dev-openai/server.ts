/**
 * dev-openai: a LOCAL TEST DOUBLE of the OpenAI chat completions API.
 *
 * This is NOT OpenAI and never talks to OpenAI. It answers on a loopback address with
 * deterministic, canned completions so that tests, demos and benchmarks can exercise the
 * proxy (retries, rate limiting, streaming, faults) without network access or cost.
 * It makes no outbound connections of any kind.
 */
import { createServer } from "node:http";
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** Human-readable label used in every banner, root page and default error text. */
export const DEV_OPENAI_NOTICE = "LOCAL TEST DOUBLE of the OpenAI API (not OpenAI)";

export interface DevOpenAIOptions {
  /** Interface to bind; default "127.0.0.1". */
  host?: string;
  /** Port to bind; default 0 (a free port). */
  port?: number;
  /** Fixed latency before answering each accepted chat call (default 0). */
  latencyMs?: number;
  /** When set, requests need "Authorization: Bearer <apiKey>", else 401. */
  apiKey?: string;
  /** Known models; anything else is answered with 404 model_not_found. */
  models?: string[];
  /** Requests-per-minute limit over a sliding 60 s window (0/undefined = none). */
  rpm?: number;
  /** Tokens-per-minute limit over a sliding 60 s window using total_tokens (0/undefined = none). */
  tpm?: number;
  /** Delay between SSE chunks when streaming (default 0). */
  streamChunkDelayMs?: number;
}

export interface Fault {
  /** HTTP status to answer with (default 500 for "status" faults). */
  status?: number;
  /** Seconds; sets the Retry-After header. */
  retryAfter?: number;
  /**
   * "status" (default): answer with `status`; "drop": destroy the socket without a response;
   * "hang": never answer (until the client gives up or the server closes);
   * "slow": wait `ms` extra, then answer normally (or with `status` when one is given).
   */
  kind?: "status" | "drop" | "hang" | "slow";
  /** Extra delay for "slow" faults. */
  ms?: number;
  /** Error message for "status" faults. */
  message?: string;
}

export interface DevOpenAIStats {
  /** All POST /v1/chat/completions received. */
  calls: number;
  /** All GET /v1/models… received (health probes use it). */
  modelCalls: number;
  ok: number;
  failed: number;
  inFlight: number;
  maxInFlight: number;
  byModel: Record<string, number>;
  /** Count per last user message text. */
  byPrompt: Record<string, number>;
  /** Successful answers per last user message text (a count > 1 means processed twice). */
  okByPrompt: Record<string, number>;
  /** Date.now() of each call start, last 100000 only. */
  callTimes: number[];
  /**
   * Most calls at once per `[[tag:NAME]]` marker in the prompt (a test tags each
   * tenant's prompts to check a per-tenant concurrency limit).
   */
  maxInFlightByTag: Record<string, number>;
  /**
   * The W3C `traceparent` (and `tracestate`) header of the last chat call per last user
   * message text, prompts with [[markers]] or under the same cap as byPrompt.
   */
  traceByPrompt: Record<string, { traceparent: string; tracestate?: string }>;
}

export interface DevOpenAI {
  /** Base URL including /v1, e.g. "http://127.0.0.1:43211/v1". */
  url: string;
  port: number;
  /** A copy of the current statistics. */
  stats(): DevOpenAIStats;
  /** FIFO queue: each next valid chat call consumes one fault. */
  injectFaults(...faults: Fault[]): void;
  setLatency(ms: number): void;
  setApiKey(key: string | undefined): void;
  setRpm(rpm: number | undefined): void;
  setTpm(tpm: number | undefined): void;
  setStreamChunkDelay(ms: number): void;
  /** Clear stats, fault queue, per-prompt marker counts and rate-limit windows. */
  reset(): void;
  /** Close the server, destroying open sockets (which also ends hanging responses). */
  close(): Promise<void>;
}

const DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo"];
const MAX_BODY_BYTES = 8 * 1024 * 1024;
const WINDOW_MS = 60_000;
const CALL_TIMES_CAP = 100_000;
// Benchmarks may send millions of distinct prompts; past this many keys new prompts are no
// longer tallied (prompts carrying [[markers]] always are, because faults depend on them).
const BY_PROMPT_CAP = 1_000_000;
const ANSWER_PREFIX = "(dev-openai test double) You said: ";
const MODEL_CREATED = 1_700_000_000;
const DOUBLE_HEADER = "x-dev-openai";
const DOUBLE_HEADER_VALUE = "local-test-double";

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Same character set as the regex class \s, so usage counts agree with the stream split. */
function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 160 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** Whitespace-separated word count, the test double's stand-in for tokens. */
function countWords(s: string): number {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    if (isSpace(s.charCodeAt(i))) inWord = false;
    else if (!inWord) {
      inWord = true;
      n++;
    }
  }
  return n;
}

function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    const parts: string[] = [];
    for (const p of content) if (isRecord(p) && typeof p.text === "string") parts.push(p.text);
    return parts.join(" ");
  }
  return "";
}

/**
 * Formats a duration the way OpenAI's x-ratelimit-reset-* headers do (Go style):
 * "120ms", "1.5s", "6m0s", "1h0m0s".
 */
export function formatDuration(ms: number): string {
  const t = Math.max(0, Math.round(ms));
  if (t < 1000) return `${t}ms`;
  const h = Math.floor(t / 3_600_000);
  const m = Math.floor((t % 3_600_000) / 60_000);
  const s = ((t % 60_000) / 1000).toFixed(3).replace(/\.?0+$/, "");
  return `${h > 0 ? `${h}h` : ""}${h > 0 || m > 0 ? `${m}m` : ""}${s}s`;
}

/**
 * Sliding window of (time, amount) entries. Uses a head index instead of Array#shift so
 * pruning stays O(1) amortised at thousands of requests per second.
 */
class SlidingWindow {
  private times: number[] = [];
  private amounts: number[] = [];
  private head = 0;
  total = 0;

  get count(): number {
    return this.times.length - this.head;
  }

  prune(now: number): void {
    const cutoff = now - WINDOW_MS;
    while (this.head < this.times.length && (this.times[this.head] ?? 0) <= cutoff) {
      this.total -= this.amounts[this.head] ?? 0;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.amounts = this.amounts.slice(this.head);
      this.head = 0;
    }
  }

  add(now: number, amount: number): void {
    this.times.push(now);
    this.amounts.push(amount);
    this.total += amount;
  }

  /** Milliseconds until at least `need` units have aged out of the window. */
  msUntilFreed(now: number, need: number): number {
    let freed = 0;
    for (let i = this.head; i < this.times.length; i++) {
      freed += this.amounts[i] ?? 0;
      if (freed >= need) return (this.times[i] ?? now) + WINDOW_MS - now;
    }
    // Even an empty window cannot satisfy it (a single request bigger than the limit).
    return WINDOW_MS;
  }

  clear(): void {
    this.times = [];
    this.amounts = [];
    this.head = 0;
    this.total = 0;
  }
}

interface Call {
  reqId: string;
  n: number;
  start: number;
  settled: boolean;
  closed: boolean;
  timer: NodeJS.Timeout | undefined;
  /** the last user message, once the body is parsed */
  prompt?: string;
  /** its `[[tag:NAME]]`, counted in flight until the call closes */
  tag?: string;
}

const TAG_RE = /\[\[tag:([A-Za-z0-9_-]{1,64})\]\]/;

interface MarkerResult {
  fault: Fault | undefined;
  extraLatencyMs: number;
  /** send this many SSE events (non-streaming: body bytes) after the headers, then nothing */
  stallAfter?: number;
  /** the answer's content is exactly this many characters */
  size?: number;
}

const MARKER_RE = /\[\[([^\]]*)\]\]/g;
const MARKER_PART_RE = /^(status|drop|hang|latency|retry|stall|size)(?::(\d+))?(?:x(\d+))?$/;

/**
 * In-band markers let a test in another process target one prompt: `[[status:500x3]]`,
 * `[[status:429x2,retry:2]]`, `[[latency:1500]]`, `[[drop]]`, `[[dropx2]]`, `[[hang]]`.
 * "xN" limits the directive to the first N calls carrying exactly this prompt text.
 * `[[stall:N]]` answers 200 and then stops sending while keeping the connection open:
 * a streamed answer after its first N SSE events, a plain one after the headers and the
 * first N bytes of the body (a stalled upstream). `[[size:N]]` makes the answer's content
 * exactly N characters (the usual answer, cut or padded with filler words).
 */
function parseMarkers(text: string, promptCount: number): MarkerResult {
  const result: MarkerResult = { fault: undefined, extraLatencyMs: 0 };
  for (const m of text.matchAll(MARKER_RE)) {
    let fault: Fault | undefined;
    let times: number | undefined;
    let retry: number | undefined;
    let latency = 0;
    let latencyTimes: number | undefined;
    for (const raw of (m[1] ?? "").split(",")) {
      const p = MARKER_PART_RE.exec(raw.trim());
      if (!p) continue;
      const value = p[2] === undefined ? undefined : Number(p[2]);
      const count = p[3] === undefined ? undefined : Number(p[3]);
      switch (p[1]) {
        case "status":
          if (value !== undefined && value >= 400 && value <= 599) {
            fault = { kind: "status", status: value };
            times = count;
          }
          break;
        case "drop":
        case "hang":
          fault = { kind: p[1] };
          times = count;
          break;
        case "latency":
          latency = value ?? 0;
          latencyTimes = count;
          break;
        case "retry":
          retry = value;
          break;
        case "stall":
          if (result.stallAfter === undefined && (count === undefined || promptCount <= count))
            result.stallAfter = value ?? 0;
          break;
        case "size":
          if (value !== undefined) result.size = value;
          break;
      }
    }
    if (latency > 0 && (latencyTimes === undefined || promptCount <= latencyTimes)) {
      result.extraLatencyMs += latency;
    }
    if (fault && !result.fault && (times === undefined || promptCount <= times)) {
      if (retry !== undefined) fault.retryAfter = retry;
      result.fault = fault;
    }
  }
  return result;
}

const FILLER = " lorem ipsum dolor sit amet";

/** `text` cut or padded with filler words to exactly `n` characters. */
function sized(text: string, n: number): string {
  if (text.length >= n) return text.slice(0, n);
  return (text + FILLER.repeat(Math.ceil((n - text.length) / FILLER.length))).slice(0, n);
}

function errorType(status: number): string {
  if (status === 429) return "requests";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

function defaultFaultMessage(status: number): string {
  if (status === 429) return "Rate limit reached (injected fault, dev-openai test double).";
  if (status >= 500) {
    return "The server had an error while processing your request (injected fault, dev-openai test double).";
  }
  return `Injected fault ${status} (dev-openai test double).`;
}

function checkNonNegative(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`${name} must be a non-negative finite number`);
  }
  return v;
}

function optionalLimit(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === 0) return undefined;
  return checkNonNegative(name, v);
}

/** Validates a Fault coming from code or from the HTTP control endpoint. */
function toFault(v: unknown): Fault {
  if (!isRecord(v)) throw new TypeError("fault must be an object");
  const f: Fault = {};
  if (v.kind !== undefined) {
    if (v.kind !== "status" && v.kind !== "drop" && v.kind !== "hang" && v.kind !== "slow") {
      throw new TypeError('fault.kind must be "status", "drop", "hang" or "slow"');
    }
    f.kind = v.kind;
  }
  if (v.status !== undefined) {
    if (typeof v.status !== "number" || !Number.isInteger(v.status)) {
      throw new TypeError("fault.status must be an integer");
    }
    if (v.status < 400 || v.status > 599) throw new TypeError("fault.status must be 400..599");
    f.status = v.status;
  }
  if (v.retryAfter !== undefined) f.retryAfter = checkNonNegative("fault.retryAfter", v.retryAfter);
  if (v.ms !== undefined) f.ms = checkNonNegative("fault.ms", v.ms);
  if (v.message !== undefined) {
    if (typeof v.message !== "string") throw new TypeError("fault.message must be a string");
    f.message = v.message;
  }
  return f;
}

function bump(map: Map<string, number>, key: string): number {
  const n = (map.get(key) ?? 0) + 1;
  map.set(key, n);
  return n;
}

function urlHost(host: string): string {
  // A wildcard bind address is not something a client can connect to; loopback is.
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * Starts the local OpenAI-compatible test double (never the real OpenAI API).
 *
 * @param opts host/port to bind plus initial latency, API key, models and rate limits.
 * @returns a handle with the base URL (including /v1), stats, fault injection and close().
 */
export async function startDevOpenAI(opts: DevOpenAIOptions = {}): Promise<DevOpenAI> {
  const host = opts.host ?? "127.0.0.1";
  const models = opts.models ?? DEFAULT_MODELS;
  const modelSet = new Set(models);
  let latencyMs = checkNonNegative("latencyMs", opts.latencyMs ?? 0);
  let apiKey = opts.apiKey;
  let rpm = optionalLimit("rpm", opts.rpm);
  let tpm = optionalLimit("tpm", opts.tpm);
  let streamDelayMs = checkNonNegative("streamChunkDelayMs", opts.streamChunkDelayMs ?? 0);

  let seq = 0;
  let calls = 0;
  let modelCalls = 0;
  let ok = 0;
  let failed = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const tagInFlight = new Map<string, number>();
  const maxTagInFlight = new Map<string, number>();
  let callTimes: number[] = [];
  const byModel = new Map<string, number>();
  const byPrompt = new Map<string, number>();
  const okByPrompt = new Map<string, number>();
  const traceByPrompt = new Map<string, { traceparent: string; tracestate?: string }>();
  let faultQueue: Fault[] = [];
  const reqWindow = new SlidingWindow();
  const tokWindow = new SlidingWindow();

  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();
  let closing: Promise<void> | undefined;
  let closed = false;
  let onDrained: (() => void) | undefined;
  let baseUrl = "";

  const server = createServer((req, res) => {
    try {
      route(req, res);
    } catch (err) {
      // A bug here must not take down the test run; answer 500 and keep serving.
      if (!res.headersSent) {
        sendJson(res, 500, {
          error: {
            message: `dev-openai test double internal error: ${String(err)}`,
            type: "server_error",
            param: null,
            code: null,
          },
        });
      } else res.destroy();
    }
  });
  // Benchmarks reuse connections; the SDK's own idle timeout (~4 s) stays below ours so the
  // server never closes a socket the client is just about to reuse.
  server.keepAliveTimeout = 30_000;
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });

  function sendJson(
    res: ServerResponse,
    status: number,
    payload: unknown,
    headers: OutgoingHttpHeaders = {},
  ): void {
    const body = JSON.stringify(payload);
    headers["content-type"] = "application/json";
    headers["content-length"] = Buffer.byteLength(body);
    headers[DOUBLE_HEADER] = DOUBLE_HEADER_VALUE;
    if (headers["x-request-id"] === undefined) headers["x-request-id"] = `req_dev_${++seq}`;
    res.writeHead(status, headers);
    res.end(body);
  }

  function sendError(
    res: ServerResponse,
    status: number,
    message: string,
    type: string,
    param: string | null,
    code: string | null,
    headers: OutgoingHttpHeaders = {},
  ): void {
    sendJson(res, status, { error: { message, type, param, code } }, headers);
  }

  function readBody(
    req: IncomingMessage,
    res: ServerResponse,
    headers: OutgoingHttpHeaders,
    onBody: (raw: string) => void,
  ): void {
    const tooLarge = (): void => {
      // The rest of the body is not worth reading; close the connection after answering.
      headers.connection = "close";
      sendError(
        res,
        413,
        `Request body exceeds ${MAX_BODY_BYTES} bytes (dev-openai test double limit).`,
        "invalid_request_error",
        null,
        "request_too_large",
        headers,
      );
    };
    const declared = Number(req.headers["content-length"]);
    if (declared > MAX_BODY_BYTES) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        done = true;
        chunks.length = 0;
        tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (done) return;
      done = true;
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      onBody(buf ? buf.toString("utf8") : "");
    });
    // Aborted uploads are accounted for by the response's close handler.
    req.on("error", () => {
      done = true;
    });
  }

  function authorized(req: IncomingMessage): boolean {
    return apiKey === undefined || req.headers.authorization === `Bearer ${apiKey}`;
  }

  function sendUnauthorized(
    req: IncomingMessage,
    res: ServerResponse,
    headers: OutgoingHttpHeaders,
  ): void {
    // Never echo the key that was sent: test logs must not leak whatever the client used.
    const message =
      req.headers.authorization === undefined
        ? "You didn't provide an API key. Provide it in the Authorization header (Bearer auth). (dev-openai local test double)"
        : "Incorrect API key provided. (dev-openai local test double)";
    sendError(res, 401, message, "invalid_request_error", null, "invalid_api_key", headers);
  }

  function route(req: IncomingMessage, res: ServerResponse): void {
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const method = req.method ?? "GET";

    if (method === "POST" && path === "/v1/chat/completions") {
      handleChat(req, res);
      return;
    }
    if (path.startsWith("/_control/")) {
      handleControl(method, path, req, res);
      return;
    }
    if (method === "GET" && (path === "/v1/models" || path.startsWith("/v1/models/"))) {
      modelCalls++;
      if (!authorized(req)) {
        req.resume();
        sendUnauthorized(req, res, {});
        return;
      }
      const toModel = (id: string): Json => ({
        id,
        object: "model",
        created: MODEL_CREATED,
        owned_by: "dev-openai-test-double",
      });
      if (path === "/v1/models") {
        sendJson(res, 200, { object: "list", data: models.map(toModel) });
        return;
      }
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      if (modelSet.has(id)) sendJson(res, 200, toModel(id));
      else sendModelNotFound(res, id, {});
      return;
    }
    if (method === "GET" && (path === "/" || path === "/health" || path === "/healthz")) {
      const text = `dev-openai: ${DEV_OPENAI_NOTICE}. Base URL ${baseUrl}\n`;
      res.writeHead(200, {
        "content-type": "text/plain; charset=utf-8",
        "content-length": Buffer.byteLength(text),
        [DOUBLE_HEADER]: DOUBLE_HEADER_VALUE,
      });
      res.end(text);
      return;
    }
    req.resume();
    sendError(
      res,
      404,
      `Invalid URL (${method} ${path}) (dev-openai test double)`,
      "invalid_request_error",
      null,
      null,
    );
  }

  function sendModelNotFound(res: ServerResponse, model: string, headers: OutgoingHttpHeaders) {
    sendError(
      res,
      404,
      `The model \`${model}\` does not exist or you do not have access to it.`,
      "invalid_request_error",
      "model",
      "model_not_found",
      headers,
    );
  }

  function handleControl(
    method: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): void {
    if (method === "GET" && path === "/_control/stats") {
      req.resume();
      sendJson(res, 200, stats());
      return;
    }
    if (method !== "POST") {
      req.resume();
      sendError(res, 405, `Use POST for ${path}`, "invalid_request_error", null, null);
      return;
    }
    readBody(req, res, {}, (raw) => {
      let body: unknown = undefined;
      if (raw.trim() !== "") {
        try {
          body = JSON.parse(raw);
        } catch {
          sendError(res, 400, "Invalid JSON body", "invalid_request_error", null, null);
          return;
        }
      }
      try {
        switch (path) {
          case "/_control/faults": {
            const list: unknown[] = Array.isArray(body) ? body : [body];
            const faults = list.map(toFault);
            faultQueue.push(...faults);
            sendJson(res, 200, { queued: faultQueue.length });
            return;
          }
          case "/_control/reset":
            reset();
            sendJson(res, 200, { ok: true });
            return;
          case "/_control/config": {
            const c = isRecord(body) ? body : {};
            // Validate everything before applying anything, so a bad field changes nothing.
            const next = {
              latencyMs:
                c.latencyMs === undefined ? latencyMs : checkNonNegative("latencyMs", c.latencyMs),
              rpm: c.rpm === undefined ? rpm : optionalLimit("rpm", c.rpm),
              tpm: c.tpm === undefined ? tpm : optionalLimit("tpm", c.tpm),
              streamChunkDelayMs:
                c.streamChunkDelayMs === undefined
                  ? streamDelayMs
                  : checkNonNegative("streamChunkDelayMs", c.streamChunkDelayMs),
            };
            let nextKey = apiKey;
            if (c.apiKey === null) nextKey = undefined;
            else if (typeof c.apiKey === "string") nextKey = c.apiKey;
            else if (c.apiKey !== undefined) throw new TypeError("apiKey must be a string or null");
            latencyMs = next.latencyMs;
            rpm = next.rpm;
            tpm = next.tpm;
            streamDelayMs = next.streamChunkDelayMs;
            apiKey = nextKey;
            sendJson(res, 200, { ...next, apiKeySet: apiKey !== undefined });
            return;
          }
          default:
            sendError(
              res,
              404,
              `Unknown control endpoint ${path}`,
              "invalid_request_error",
              null,
              null,
            );
        }
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        sendError(res, 400, msg, "invalid_request_error", null, null);
      }
    });
  }

  /** Runs fn after ms, unless the call's connection went away or the server is closing. */
  function later(call: Call, ms: number, fn: () => void): void {
    if (ms <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      call.timer = undefined;
      if (!call.closed && !closed) fn();
    }, ms);
    timers.add(t);
    call.timer = t;
  }

  function settle(call: Call, success: boolean): void {
    if (call.settled) return;
    call.settled = true;
    if (success) {
      ok++;
      if (call.prompt !== undefined) bump(okByPrompt, call.prompt);
    } else failed++;
  }

  function handleChat(req: IncomingMessage, res: ServerResponse): void {
    const n = ++seq;
    const call: Call = {
      reqId: `req_dev_${n}`,
      n,
      start: Date.now(),
      settled: false,
      closed: false,
      timer: undefined,
    };
    calls++;
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    callTimes.push(call.start);
    if (callTimes.length > 2 * CALL_TIMES_CAP) callTimes = callTimes.slice(-CALL_TIMES_CAP);
    // 'close' fires exactly once, after the response is flushed or when the socket dies, so
    // it is the one place where in-flight accounting is always correct.
    res.once("close", () => {
      call.closed = true;
      inFlight--;
      if (call.tag !== undefined) tagInFlight.set(call.tag, (tagInFlight.get(call.tag) ?? 1) - 1);
      if (call.timer) {
        clearTimeout(call.timer);
        timers.delete(call.timer);
        call.timer = undefined;
      }
      settle(call, false);
      if (inFlight === 0) onDrained?.();
    });
    const headers: OutgoingHttpHeaders = { "x-request-id": call.reqId };
    const fail = (
      status: number,
      message: string,
      type: string,
      param: string | null,
      code: string | null,
    ): void => {
      settle(call, false);
      sendError(res, status, message, type, param, code, headers);
    };

    readBody(req, res, headers, (raw) => {
      if (!authorized(req)) {
        settle(call, false);
        sendUnauthorized(req, res, headers);
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        fail(
          400,
          "We could not parse the JSON body of your request. (dev-openai test double expects a JSON payload.)",
          "invalid_request_error",
          null,
          null,
        );
        return;
      }
      if (!isRecord(body)) {
        fail(400, "Request body must be a JSON object.", "invalid_request_error", null, null);
        return;
      }
      const messages = body.messages;
      if (messages === undefined || messages === null) {
        fail(
          400,
          "Missing required parameter: 'messages'.",
          "invalid_request_error",
          "messages",
          "missing_required_parameter",
        );
        return;
      }
      if (!Array.isArray(messages)) {
        fail(
          400,
          "Invalid type for 'messages': expected an array.",
          "invalid_request_error",
          "messages",
          "invalid_type",
        );
        return;
      }
      if (messages.length === 0) {
        fail(
          400,
          "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
          "invalid_request_error",
          "messages",
          "empty_array",
        );
        return;
      }
      let promptTokens = 0;
      let prompt = "";
      for (let i = 0; i < messages.length; i++) {
        const m: unknown = messages[i];
        if (!isRecord(m) || typeof m.role !== "string") {
          fail(
            400,
            `Invalid 'messages[${i}]': expected an object with a string 'role'.`,
            "invalid_request_error",
            `messages.[${i}].role`,
            "invalid_value",
          );
          return;
        }
        const c = m.content;
        if (c !== undefined && c !== null && typeof c !== "string" && !Array.isArray(c)) {
          fail(
            400,
            `Invalid type for 'messages[${i}].content': expected a string or an array of parts.`,
            "invalid_request_error",
            `messages.[${i}].content`,
            "invalid_type",
          );
          return;
        }
        const text = contentText(c);
        promptTokens += countWords(text);
        if (m.role === "user") prompt = text;
      }
      const model = body.model;
      if (typeof model !== "string" || model === "") {
        fail(
          400,
          "you must provide a model parameter",
          "invalid_request_error",
          "model",
          "missing_required_parameter",
        );
        return;
      }
      if (!modelSet.has(model)) {
        settle(call, false);
        sendModelNotFound(res, model, headers);
        return;
      }
      let choicesN = 1;
      if (body.n !== undefined && body.n !== null) {
        if (typeof body.n !== "number" || !Number.isInteger(body.n) || body.n < 1 || body.n > 128) {
          fail(
            400,
            "Invalid 'n': expected an integer between 1 and 128.",
            "invalid_request_error",
            "n",
            "invalid_value",
          );
          return;
        }
        choicesN = body.n;
      }
      const stream = body.stream === true;
      const includeUsage =
        stream && isRecord(body.stream_options) && body.stream_options.include_usage === true;

      bump(byModel, model);
      const hasMarker = prompt.includes("[[");
      let promptCount = 1;
      if (hasMarker || byPrompt.has(prompt) || byPrompt.size < BY_PROMPT_CAP) {
        promptCount = bump(byPrompt, prompt);
        call.prompt = prompt;
        const tp = req.headers.traceparent;
        if (typeof tp === "string") {
          const ts = req.headers.tracestate;
          traceByPrompt.set(prompt, {
            traceparent: tp,
            ...(typeof ts === "string" ? { tracestate: ts } : {}),
          });
        }
      }
      const tag = hasMarker && !call.closed ? TAG_RE.exec(prompt)?.[1] : undefined;
      if (tag !== undefined) {
        call.tag = tag;
        const n = (tagInFlight.get(tag) ?? 0) + 1;
        tagInFlight.set(tag, n);
        maxTagInFlight.set(tag, Math.max(maxTagInFlight.get(tag) ?? 0, n));
      }
      const marker = hasMarker ? parseMarkers(prompt, promptCount) : undefined;
      const fault = faultQueue.shift() ?? marker?.fault;
      let delay = latencyMs + (marker?.extraLatencyMs ?? 0);
      if (fault?.kind === "slow") delay += fault.ms ?? 0;

      if (fault && (fault.kind !== "slow" || fault.status !== undefined)) {
        later(call, delay, () => {
          if (fault.kind === "drop") {
            settle(call, false);
            res.destroy();
            return;
          }
          if (fault.kind === "hang") {
            // Deliberately never answered; close() or the client's timeout ends it.
            settle(call, false);
            return;
          }
          const status = fault.status ?? 500;
          if (fault.retryAfter !== undefined) {
            headers["retry-after"] = String(Math.ceil(fault.retryAfter));
          }
          headers["openai-processing-ms"] = String(Date.now() - call.start);
          fail(
            status,
            fault.message ?? defaultFaultMessage(status),
            errorType(status),
            null,
            status === 429 ? "rate_limit_exceeded" : null,
          );
        });
        return;
      }

      const content =
        marker?.size === undefined
          ? ANSWER_PREFIX + prompt
          : sized(ANSWER_PREFIX + prompt, marker.size);
      const stallAfter = marker?.stallAfter;
      const completionTokens = countWords(content) * choicesN;
      const totalTokens = promptTokens + completionTokens;

      // Rate limits are decided on arrival; only accepted requests enter the windows.
      const now = Date.now();
      if (rpm !== undefined) reqWindow.prune(now);
      if (tpm !== undefined) tokWindow.prune(now);
      let limitedBy: "requests" | "tokens" | undefined;
      let waitMs = 0;
      if (rpm !== undefined && reqWindow.count + 1 > rpm) {
        limitedBy = "requests";
        waitMs = reqWindow.msUntilFreed(now, reqWindow.count + 1 - rpm);
      } else if (tpm !== undefined && tokWindow.total + totalTokens > tpm) {
        limitedBy = "tokens";
        waitMs = tokWindow.msUntilFreed(now, tokWindow.total + totalTokens - tpm);
      }
      if (limitedBy === undefined) {
        if (rpm !== undefined) reqWindow.add(now, 1);
        if (tpm !== undefined) tokWindow.add(now, totalTokens);
      }
      if (rpm !== undefined) {
        headers["x-ratelimit-limit-requests"] = String(rpm);
        headers["x-ratelimit-remaining-requests"] = String(Math.max(0, rpm - reqWindow.count));
        // Reported as the time until the next slot frees up, which is what a client that
        // hit remaining=0 actually needs to wait.
        headers["x-ratelimit-reset-requests"] = formatDuration(
          reqWindow.count > 0 ? reqWindow.msUntilFreed(now, 1) : 0,
        );
      }
      if (tpm !== undefined) {
        headers["x-ratelimit-limit-tokens"] = String(tpm);
        headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, tpm - tokWindow.total));
        headers["x-ratelimit-reset-tokens"] = formatDuration(
          tokWindow.count > 0 ? tokWindow.msUntilFreed(now, 1) : 0,
        );
      }
      if (limitedBy !== undefined) {
        const seconds = Math.max(1, Math.ceil(waitMs / 1000));
        headers["retry-after"] = String(seconds);
        headers["openai-processing-ms"] = "0";
        const what =
          limitedBy === "requests"
            ? `requests per min (RPM): Limit ${rpm}, Used ${reqWindow.count}, Requested 1`
            : `tokens per min (TPM): Limit ${tpm}, Used ${tokWindow.total}, Requested ${totalTokens}`;
        fail(
          429,
          `Rate limit reached for ${model} (dev-openai test double) on ${what}. Please try again in ${formatDuration(waitMs)}.`,
          limitedBy,
          null,
          "rate_limit_exceeded",
        );
        return;
      }

      later(call, delay, () => {
        const created = Math.floor(Date.now() / 1000);
        const id = `chatcmpl-dev-${call.n}`;
        const usage = {
          prompt_tokens: promptTokens,
          completion_tokens: completionTokens,
          total_tokens: totalTokens,
        };
        headers["openai-processing-ms"] = String(Date.now() - call.start);
        // A stalled answer never completes: it counts as failed, and close() or the
        // client's own timeout ends it.
        settle(call, stallAfter === undefined);
        if (!stream) {
          const choices = [];
          for (let i = 0; i < choicesN; i++) {
            choices.push({
              index: i,
              message: { role: "assistant", content, refusal: null },
              logprobs: null,
              finish_reason: "stop",
            });
          }
          const answer = {
            id,
            object: "chat.completion",
            created,
            model,
            system_fingerprint: "dev-openai",
            choices,
            usage,
          };
          if (stallAfter !== undefined) {
            const body = Buffer.from(JSON.stringify(answer));
            headers["content-type"] = "application/json";
            headers["content-length"] = body.length;
            headers[DOUBLE_HEADER] = DOUBLE_HEADER_VALUE;
            res.writeHead(200, headers);
            if (stallAfter > 0) res.write(body.subarray(0, stallAfter));
            else res.flushHeaders();
            return;
          }
          sendJson(res, 200, answer, headers);
          return;
        }
        const chunk = (choices: unknown[], extra?: Json): string =>
          `data: ${JSON.stringify({
            id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: "dev-openai",
            choices,
            ...(includeUsage ? { usage: null } : {}),
            ...extra,
          })}\n\n`;
        const events: string[] = [];
        for (let i = 0; i < choicesN; i++) {
          events.push(
            chunk([
              {
                index: i,
                delta: { role: "assistant", content: "", refusal: null },
                logprobs: null,
                finish_reason: null,
              },
            ]),
          );
        }
        for (const word of content.match(/\s*\S+\s*/g) ?? []) {
          for (let i = 0; i < choicesN; i++) {
            events.push(
              chunk([{ index: i, delta: { content: word }, logprobs: null, finish_reason: null }]),
            );
          }
        }
        for (let i = 0; i < choicesN; i++) {
          events.push(chunk([{ index: i, delta: {}, logprobs: null, finish_reason: "stop" }]));
        }
        if (includeUsage) events.push(chunk([], { usage }));
        events.push("data: [DONE]\n\n");

        headers["content-type"] = "text/event-stream; charset=utf-8";
        headers["cache-control"] = "no-cache";
        headers[DOUBLE_HEADER] = DOUBLE_HEADER_VALUE;
        res.writeHead(200, headers);
        if (stallAfter !== undefined) {
          const sent = events.slice(0, Math.min(stallAfter, events.length - 1));
          if (sent.length > 0) res.write(sent.join(""));
          else res.flushHeaders();
          return;
        }
        const gap = streamDelayMs;
        if (gap <= 0) {
          res.end(events.join(""));
          return;
        }
        let next = 0;
        const writeNext = (): void => {
          const ev = events[next++];
          if (ev === undefined) return;
          if (next >= events.length) {
            res.end(ev);
            return;
          }
          res.write(ev);
          later(call, gap, writeNext);
        };
        writeNext();
      });
    });
  }

  function stats(): DevOpenAIStats {
    return {
      calls,
      modelCalls,
      ok,
      failed,
      inFlight,
      maxInFlight,
      byModel: Object.fromEntries(byModel),
      byPrompt: Object.fromEntries(byPrompt),
      okByPrompt: Object.fromEntries(okByPrompt),
      callTimes: callTimes.slice(-CALL_TIMES_CAP),
      maxInFlightByTag: Object.fromEntries(maxTagInFlight),
      traceByPrompt: Object.fromEntries(traceByPrompt),
    };
  }

  function reset(): void {
    calls = 0;
    modelCalls = 0;
    ok = 0;
    failed = 0;
    // In-flight is live state, not history: calls still open will decrement it later.
    maxInFlight = inFlight;
    maxTagInFlight.clear();
    for (const [t, n] of tagInFlight) if (n > 0) maxTagInFlight.set(t, n);
    callTimes = [];
    byModel.clear();
    byPrompt.clear();
    okByPrompt.clear();
    traceByPrompt.clear();
    faultQueue = [];
    reqWindow.clear();
    tokWindow.clear();
  }

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  baseUrl = `http://${urlHost(host)}:${port}/v1`;

  return {
    url: baseUrl,
    port,
    stats,
    injectFaults(...faults: Fault[]): void {
      faultQueue.push(...faults.map(toFault));
    },
    setLatency(ms: number): void {
      latencyMs = checkNonNegative("latencyMs", ms);
    },
    setApiKey(key: string | undefined): void {
      apiKey = key;
    },
    setRpm(value: number | undefined): void {
      rpm = optionalLimit("rpm", value);
    },
    setTpm(value: number | undefined): void {
      tpm = optionalLimit("tpm", value);
    },
    setStreamChunkDelay(ms: number): void {
      streamDelayMs = checkNonNegative("streamChunkDelayMs", ms);
    },
    reset,
    close(): Promise<void> {
      closed = true;
      closing ??= new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        // Resolve only once every call's close handler has run, so stats() after close()
        // shows inFlight 0; the unref'd fallback keeps a lost 'close' event from hanging us.
        server.close(() => {
          if (inFlight <= 0) {
            resolve();
            return;
          }
          onDrained = resolve;
          setTimeout(resolve, 1000).unref();
        });
        // Destroying every socket also ends "hang" responses that would otherwise keep
        // server.close() waiting forever.
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}
