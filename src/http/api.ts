/**
 * The operator page's JSON API (also for scripts), under `/api` on `http.port`:
 *
 *   GET    /api/overview             queue depths, in flight, breaker, DLQ size, activity
 *   GET    /api/dlq?limit=&after=    one page of dead letters, oldest first
 *   POST   /api/dlq/<id>/replay      put one dead letter back into the queue
 *   POST   /api/dlq/replay           replay every dead letter present now
 *   DELETE /api/dlq/<id>             delete one dead letter
 *
 * Every call passes the guards (Host, token); replays and deletes also the Origin check.
 * Answers carry no secret: dead letters are shown without their headers or body.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { NotReplayableError, type DeadLetter, type DeadLetters } from "../client/dlq.js";
import { scrub } from "../config/redact.js";
import type { Logger } from "../log.js";
import { idProblem } from "../protocol/subjects.js";
import { checkHost, checkOrigin, checkToken, type Refusal } from "./guard.js";
import type { Route } from "./server.js";
import type { Overview } from "./overview.js";

/** A dead letter as the API shows it. */
export interface DeadLetterView {
  id: string;
  seq: number;
  tenant: string;
  priority: string;
  code: number;
  error: string;
  attempts: number;
  failedAt: string;
}

export interface DlqPageView {
  items: DeadLetterView[];
  /** pass as `after` for the next page; absent on the last page */
  next?: number;
}

export interface ApiDeps {
  overview(): Promise<Overview>;
  dlq: DeadLetters;
  /** `http.token` ("" = none) */
  token: string;
  log: Logger;
  /** secrets to scrub from any error text */
  secrets?: readonly string[];
}

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;
/** replay-all reads the DLQ this many at a time */
const REPLAY_PAGE = 100;

function view(d: DeadLetter): DeadLetterView {
  return {
    id: d.id,
    seq: d.seq,
    tenant: d.tenant,
    priority: d.priority,
    code: d.code,
    error: d.error,
    attempts: d.attempts,
    failedAt: d.failedAt,
  };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  extra: Record<string, string> = {},
) {
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(text),
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      ...extra,
    })
    .end(text);
}

function refuse(res: ServerResponse, r: Refusal) {
  send(
    res,
    r.status,
    { error: r.message },
    r.status === 401 ? { "www-authenticate": 'Bearer realm="nats-openai-proxy"' } : {},
  );
}

function intParam(q: URLSearchParams, name: string, dflt: number, max: number): number {
  const raw = q.get(name);
  if (raw === null || raw === "") return dflt;
  if (!/^\d+$/.test(raw))
    throw new HttpError(400, `${name} must be a non-negative integer, got "${raw}"`);
  return Math.min(Number(raw), max);
}

function idOf(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, "the id is not valid URL encoding");
  }
  const problem = idProblem(id);
  if (problem) throw new HttpError(400, problem);
  return id;
}

/** The `/api` routes. */
export function apiRoutes(d: ApiDeps): Route {
  const replayAll = async () => {
    // Only the dead letters present now: a replayed request that fails again at once gets a
    // new, later sequence and is left for the next replay.
    const stopAt = await d.dlq.lastSeq();
    const replayed: string[] = [];
    const failed: { id: string; error: string }[] = [];
    let after = 0;
    while (after < stopAt) {
      const page = await d.dlq.page({ limit: REPLAY_PAGE, after });
      for (const x of page.items) {
        if (x.seq > stopAt) break;
        try {
          await d.dlq.replay(x);
          replayed.push(x.id);
        } catch (e) {
          failed.push({ id: x.id, error: scrub((e as Error).message ?? String(e), d.secrets) });
        }
      }
      const last = page.items.at(-1)?.seq;
      if (page.next === undefined || last === undefined) break;
      after = last;
    }
    return { replayed, failed };
  };

  const serve = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const method = req.method ?? "GET";
    const path = url.pathname;
    const mutating = method === "POST" || method === "DELETE";
    const refusal =
      checkHost(req.headers, d.token) ??
      checkToken(req.headers, d.token) ??
      (mutating ? checkOrigin(req.headers) : undefined);
    if (refusal) {
      refuse(res, refusal);
      return;
    }
    if (path === "/api/overview") {
      if (method !== "GET") throw new HttpError(405, "use GET");
      send(res, 200, await d.overview());
      return;
    }
    if (path === "/api/dlq") {
      if (method !== "GET") throw new HttpError(405, "use GET");
      const limit = Math.max(1, intParam(url.searchParams, "limit", DEFAULT_PAGE, MAX_PAGE));
      const after = intParam(url.searchParams, "after", 0, Number.MAX_SAFE_INTEGER);
      const p = await d.dlq.page({ limit, after });
      const body: DlqPageView = { items: p.items.map(view) };
      if (p.next !== undefined) body.next = p.next;
      send(res, 200, body);
      return;
    }
    if (path === "/api/dlq/replay") {
      if (method !== "POST") throw new HttpError(405, "use POST");
      const r = await replayAll();
      d.log.info(
        { replayed: r.replayed.length, failed: r.failed.length },
        "dead letters replayed (operator API)",
      );
      send(res, 200, r);
      return;
    }
    const one = /^\/api\/dlq\/([^/]+)(\/replay)?$/.exec(path);
    if (one) {
      const id = idOf(one[1]!);
      if (one[2]) {
        if (method !== "POST") throw new HttpError(405, "use POST");
        const dl = await d.dlq.show(id);
        if (!dl) throw new HttpError(404, `no dead letter for ${id}`);
        try {
          await d.dlq.replay(dl);
        } catch (e) {
          if (e instanceof NotReplayableError) throw new HttpError(409, e.message);
          throw e;
        }
        d.log.info({ id, seq: dl.seq }, "dead letter replayed (operator API)");
        send(res, 200, { replayed: id });
        return;
      }
      if (method !== "DELETE") throw new HttpError(405, "use DELETE (or POST …/replay)");
      if (!(await d.dlq.remove(id))) throw new HttpError(404, `no dead letter for ${id}`);
      d.log.info({ id }, "dead letter deleted (operator API)");
      send(res, 200, { deleted: id });
      return;
    }
    throw new HttpError(404, `no such API: ${method} ${path}`);
  };

  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname !== "/api" && !url.pathname.startsWith("/api/")) return false;
    // No request body is read: drain it so the connection stays usable.
    req.resume();
    serve(req, res, url).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 503;
      const message = scrub(e instanceof Error ? e.message : String(e), d.secrets);
      if (status >= 500)
        d.log.warn({ path: url.pathname, err: message }, "operator API call failed");
      if (!res.headersSent)
        send(res, status, { error: message }, status === 405 ? { allow: "GET, POST, DELETE" } : {});
      else res.destroy();
    });
    return true;
  };
}
