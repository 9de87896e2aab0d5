/**
 * The response cache's wire rules (docs/protocol.md, "Response cache"): the `Proxy-Cache`
 * TTL, which requests are alike (the normalised request and its key), and which
 * requests `cache.models` may cache. Pure: no connections.
 */
import { createHash } from "node:crypto";
import { Code, RequestError } from "./codes.js";
import type { ChatParams } from "./request.js";

/** Fields that do not change the answer, left out of the cache key. */
export const CACHE_IGNORED_FIELDS: readonly string[] = Object.freeze([
  "user",
  "metadata",
  "stream",
  "stream_options",
]);

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const TTL_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;

/**
 * Parses a `Proxy-Cache` / `--cache` TTL: `500ms`, `30s`, `10m`, `1h`, `1d`, or a bare
 * number of seconds.
 * @throws RequestError (400) naming the value and the accepted forms
 */
export function parseCacheTtl(v: string): number {
  const m = TTL_RE.exec(v.trim());
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[m[2] ?? "s"]!) : NaN;
  if (!Number.isFinite(ms) || ms <= 0) {
    const shown = v.length > 40 ? `${v.slice(0, 40)}…` : v;
    throw new RequestError(
      Code.badRequest,
      // eslint-disable-next-line no-control-regex
      `Proxy-Cache "${shown.replace(/[\x00-\x1f\x7f]/g, "?")}" is not a TTL: use a positive duration such as 30s, 10m, 1h or 1500ms (a bare number is seconds)`,
    );
  }
  return ms;
}

/** JSON with every object's keys sorted, so equal requests encode equally. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** The request as the cache compares it: the params without the ignored fields. */
export function normalisedRequest(p: ChatParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) if (!CACHE_IGNORED_FIELDS.includes(k)) out[k] = v;
  return out;
}

/** The cache key: the hex sha256 of the canonical JSON of the normalised request. */
export function cacheKey(p: ChatParams): string {
  return createHash("sha256")
    .update(canonicalJson(normalisedRequest(p)))
    .digest("hex");
}

/** True when the same request should give the same answer: temperature 0, or a seed. */
export function isDeterministic(p: ChatParams): boolean {
  return p.temperature === 0 || (typeof p.seed === "number" && Number.isFinite(p.seed));
}
