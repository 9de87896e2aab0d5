/**
 * A `fetch` for the openai SDK on plain `node:http(s)` with keep-alive agents. Node's
 * built-in fetch (undici + WHATWG streams) costs several hundred µs of CPU per call —
 * most of a worker's CPU at high request rates (docs/performance.md). This keeps the
 * SDK (its parsing, errors, streaming) and replaces only the transport: a buffered
 * body for ordinary responses, a web stream only for server-sent events.
 */
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";

export interface NodeFetchOptions {
  /** sockets per host (default: unlimited, like fetch) */
  maxSockets?: number;
}

type FetchInput = Parameters<typeof fetch>[0];
type FetchInit = Parameters<typeof fetch>[1];

function headerRecord(
  h: FetchInit extends undefined ? never : NonNullable<FetchInit>["headers"],
): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  if (h instanceof Headers) h.forEach((v, k) => (out[k] = v));
  else if (Array.isArray(h)) for (const [k, v] of h) out[k!] = v!;
  else Object.assign(out, h);
  return out;
}

/** Creates the fetch function; agents (and their sockets) live as long as it does. */
export function createNodeFetch(o: NodeFetchOptions = {}): typeof fetch {
  const agentOpts = {
    keepAlive: true,
    maxSockets: o.maxSockets ?? Infinity,
    scheduling: "lifo" as const,
  };
  const agents = { "http:": new http.Agent(agentOpts), "https:": new https.Agent(agentOpts) };
  const f = (input: FetchInput, init?: FetchInit): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      const signal = init?.signal ?? undefined;
      if (signal?.aborted) {
        reject(new DOMException("This operation was aborted", "AbortError"));
        return;
      }
      const mod = url.protocol === "https:" ? https : http;
      const req = mod.request(
        url,
        {
          method: init?.method ?? "GET",
          headers: headerRecord(init?.headers),
          agent: agents[url.protocol as "http:" | "https:"],
        },
        (res) => {
          const headers = new Headers();
          const raw = res.rawHeaders;
          for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
          const status = res.statusCode ?? 500;
          const init2 = { status, statusText: res.statusMessage ?? "", headers };
          if ((res.headers["content-type"] ?? "").includes("text/event-stream")) {
            resolve(new Response(Readable.toWeb(res) as ReadableStream<Uint8Array>, init2));
            return;
          }
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            cleanup();
            // 204/304 may not carry a body in a Response.
            resolve(
              new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), init2),
            );
          });
          res.on("error", (e) => {
            cleanup();
            reject(e);
          });
        },
      );
      const onAbort = () =>
        req.destroy(new DOMException("This operation was aborted", "AbortError"));
      const cleanup = () => signal?.removeEventListener("abort", onAbort);
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (e) => {
        cleanup();
        reject(e instanceof DOMException ? e : new TypeError("fetch failed", { cause: e }));
      });
      const body = init?.body;
      if (body === undefined || body === null) req.end();
      else if (typeof body === "string" || body instanceof Uint8Array) req.end(body);
      else if (body instanceof ArrayBuffer) req.end(Buffer.from(body));
      else {
        cleanup();
        req.destroy();
        reject(new TypeError("unsupported request body type for the node transport"));
      }
    });
  return f;
}
