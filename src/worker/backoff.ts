/**
 * Retry maths: exponential backoff with jitter, and the delays an API asks for
 * (Retry-After, retry-after-ms, x-ratelimit-reset-*). Pure functions.
 */

export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  factor?: number;
}

/**
 * Delay before retry number `attempt` (1 = first retry): exponential, capped, with
 * "equal jitter" (half fixed, half random) so that instances spread out without ever
 * retrying immediately.
 */
export function backoffDelay(
  attempt: number,
  o: BackoffOptions,
  random: () => number = Math.random,
): number {
  const factor = o.factor ?? 2;
  const exp = Math.min(o.maxMs, o.minMs * factor ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * Parses the API's duration format ("1s", "6m0s", "120ms", "1h2m3.5s", "0.5s").
 * @returns milliseconds, or undefined if unreadable
 */
export function parseDuration(v: string): number | undefined {
  const s = v.trim();
  if (s === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000; // bare seconds
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    const n = Number(m[1]);
    const unit = m[2];
    total += unit === "h" ? n * 3_600_000 : unit === "m" ? n * 60_000 : unit === "s" ? n * 1000 : n;
    consumed += m[0].length;
  }
  return consumed === s.length ? Math.round(total) : undefined;
}

/**
 * How long the API asked us to wait, from response headers (lower-case keys):
 * `retry-after-ms`, `retry-after` (seconds or an HTTP date), else the
 * `x-ratelimit-reset-*` of whichever limit is exhausted.
 * @returns milliseconds, or undefined when the API said nothing usable
 */
export function requestedDelay(
  headers: Readonly<Record<string, string>>,
  now = Date.now(),
): number | undefined {
  const ms = headers["retry-after-ms"];
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms.trim())) return Math.ceil(Number(ms));
  const ra = headers["retry-after"];
  if (ra !== undefined) {
    const t = ra.trim();
    if (/^\d+(\.\d+)?$/.test(t)) return Math.ceil(Number(t) * 1000);
    const date = Date.parse(t);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  const resets: number[] = [];
  for (const kind of ["requests", "tokens"]) {
    const reset = headers[`x-ratelimit-reset-${kind}`];
    const remaining = headers[`x-ratelimit-remaining-${kind}`];
    if (reset === undefined) continue;
    const d = parseDuration(reset);
    if (d === undefined) continue;
    if (remaining === undefined || Number(remaining) <= 0) resets.push(d);
  }
  return resets.length > 0 ? Math.max(...resets) : undefined;
}

/**
 * Delay for `nak(delay)` after in-process retries failed on delivery `deliveryCount`:
 * grows with each redelivery, capped, with jitter.
 */
export function nakDelay(
  deliveryCount: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  return backoffDelay(deliveryCount, { minMs: baseMs, maxMs }, random);
}
