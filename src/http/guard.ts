/**
 * Who may use the operator page's API: the bearer token (`http.token`), the Host check that
 * keeps a DNS-rebinding page off a token-less loopback port, and the Origin check that
 * refuses cross-site replays and deletes. Pure functions of a request's headers.
 */
import { timingSafeEqual, createHash } from "node:crypto";
import { isIP } from "node:net";
import type { IncomingHttpHeaders } from "node:http";
import { ConfigError } from "../config/load.js";

/** Shortest `http.token` accepted: a guessable token is no protection. */
export const MIN_TOKEN_LENGTH = 16;

/** True for an address or name that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  if (h === "::1") return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return mapped !== null && mapped[1]!.startsWith("127.");
}

/**
 * Refuses an HTTP configuration that would expose the operator API: an address that is not
 * loopback without a token, or a token too short to mean anything.
 * @throws ConfigError naming http.token
 */
export function checkHttpExposure(http: { enabled: boolean; host: string; token: string }): void {
  if (!http.enabled) return;
  if (http.token !== "" && http.token.length < MIN_TOKEN_LENGTH)
    throw new ConfigError(
      `http.token (HTTP_TOKEN) must be at least ${MIN_TOKEN_LENGTH} characters, e.g. the output of "openssl rand -hex 24"`,
    );
  if (http.token === "" && !isLoopbackHost(http.host))
    throw new ConfigError(
      `http.host is "${http.host}", which is not a loopback address: set http.token (env HTTP_TOKEN) so the operator page's API (replay, delete) is protected, or bind http.host to 127.0.0.1`,
    );
}

/** A refusal: HTTP status and a message safe to show (never the token). */
export interface Refusal {
  status: 401 | 403;
  message: string;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** The bearer-token check; constant time in the token's content. */
export function checkToken(h: IncomingHttpHeaders, token: string): Refusal | undefined {
  if (token === "") return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h.authorization ?? "");
  // Hashing first makes both sides the same length, so the comparison says nothing of it.
  if (m && timingSafeEqual(digest(m[1]!), digest(token))) return undefined;
  return {
    status: 401,
    message: m
      ? "wrong token (Authorization: Bearer <http.token>)"
      : "this API needs the token: Authorization: Bearer <http.token>",
  };
}

/** The host name of a Host header, without the port. */
function hostName(host: string): string {
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (bracket) return bracket[1]!;
  return host.replace(/:\d+$/, "");
}

/**
 * With no token, a page served under any other name than a loopback one is a DNS-rebinding
 * attempt (a foreign site resolving its own name to 127.0.0.1): refuse it. With a token the
 * token protects the API wherever it is reached.
 */
export function checkHost(h: IncomingHttpHeaders, token: string): Refusal | undefined {
  if (token !== "") return undefined;
  const host = h.host ?? "";
  if (host !== "" && isLoopbackHost(hostName(host))) return undefined;
  return {
    status: 403,
    message: `Host "${host}" refused: without http.token the API answers only on a loopback name (127.0.0.1, localhost)`,
  };
}

/**
 * Replays and deletes come from this page or from scripts, never from another site: a
 * browser's Origin (or Sec-Fetch-Site) must say same-origin. No Origin at all is a script.
 */
export function checkOrigin(h: IncomingHttpHeaders): Refusal | undefined {
  const site = h["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none")
    return { status: 403, message: `cross-site request refused (Sec-Fetch-Site: ${site})` };
  const origin = h.origin;
  if (origin === undefined) return undefined;
  let ok = false;
  try {
    const u = new URL(origin);
    ok = (u.protocol === "http:" || u.protocol === "https:") && u.host === (h.host ?? "");
  } catch {
    ok = false;
  }
  return ok ? undefined : { status: 403, message: `cross-site request refused (Origin ${origin})` };
}
