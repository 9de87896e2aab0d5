import { describe, expect, it } from "vitest";
import { backoffDelay, nakDelay, parseDuration, requestedDelay } from "../../src/worker/backoff.js";

const low = () => 0;
const high = () => 0.999;

describe("backoffDelay", () => {
  const o = { minMs: 100, maxMs: 1000 };

  it("grows exponentially from minMs", () => {
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, o, low))).toEqual([50, 100, 200, 400]);
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, o, high))).toEqual([100, 200, 400, 800]);
  });

  it("is capped at maxMs", () => {
    for (const a of [5, 6, 10, 50]) {
      expect(backoffDelay(a, o, high)).toBeLessThanOrEqual(1000);
      expect(backoffDelay(a, o, low)).toBe(500);
    }
  });

  it("stays within [exp/2, exp] (equal jitter, never zero)", () => {
    for (let attempt = 1; attempt <= 8; attempt++) {
      const exp = Math.min(1000, 100 * 2 ** (attempt - 1));
      for (const r of [0, 0.25, 0.5, 0.999]) {
        const d = backoffDelay(attempt, o, () => r);
        expect(d).toBeGreaterThanOrEqual(exp / 2);
        expect(d).toBeLessThanOrEqual(exp);
      }
    }
  });

  it("honours a custom factor and treats attempt 0 like attempt 1", () => {
    expect(backoffDelay(3, { minMs: 100, maxMs: 10_000, factor: 3 }, low)).toBe(450);
    expect(backoffDelay(0, o, low)).toBe(backoffDelay(1, o, low));
  });

  it("uses Math.random by default and stays in range", () => {
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(2, o);
      expect(d).toBeGreaterThanOrEqual(100);
      expect(d).toBeLessThanOrEqual(200);
    }
  });
});

describe("parseDuration", () => {
  it.each([
    ["1s", 1000],
    ["6m0s", 360_000],
    ["120ms", 120],
    ["1h2m3.5s", 3_723_500],
    ["0.5s", 500],
    ["2", 2000],
    ["1.5", 1500],
    [" 20ms ", 20],
    ["1m30s", 90_000],
  ])("%j → %d ms", (v, ms) => {
    expect(parseDuration(v)).toBe(ms);
  });

  it.each(["", "   ", "soon", "1x", "s", "1s and more", "-1s", "1d"])("%j → undefined", (v) => {
    expect(parseDuration(v)).toBeUndefined();
  });
});

describe("requestedDelay", () => {
  it("reads retry-after-ms", () => {
    expect(requestedDelay({ "retry-after-ms": "1500" })).toBe(1500);
    expect(requestedDelay({ "retry-after-ms": "12.2" })).toBe(13);
  });

  it("prefers retry-after-ms over retry-after", () => {
    expect(requestedDelay({ "retry-after-ms": "250", "retry-after": "10" })).toBe(250);
  });

  it("reads retry-after in seconds", () => {
    expect(requestedDelay({ "retry-after": "2" })).toBe(2000);
    expect(requestedDelay({ "retry-after": " 0.5 " })).toBe(500);
  });

  it("reads retry-after as an HTTP date relative to now", () => {
    const date = "Wed, 21 Oct 2015 07:28:00 GMT";
    const at = Date.UTC(2015, 9, 21, 7, 28, 0);
    expect(requestedDelay({ "retry-after": date }, at - 7000)).toBe(7000);
    // a date in the past means: now
    expect(requestedDelay({ "retry-after": date }, at + 60_000)).toBe(0);
  });

  it("uses x-ratelimit-reset-requests when no requests remain", () => {
    expect(
      requestedDelay({
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
      }),
    ).toBe(1000);
  });

  it("ignores a reset when requests remain", () => {
    expect(
      requestedDelay({
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "1s",
      }),
    ).toBeUndefined();
  });

  it("takes the longer of the exhausted requests and tokens resets", () => {
    expect(
      requestedDelay({
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
      }),
    ).toBe(360_000);
    // only the exhausted one counts
    expect(
      requestedDelay({
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "120ms",
      }),
    ).toBe(120);
  });

  it("falls back to the reset headers when retry-after is unreadable", () => {
    expect(
      requestedDelay({
        "retry-after": "soon",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "3s",
      }),
    ).toBe(3000);
  });

  it("returns undefined when the API said nothing usable", () => {
    expect(requestedDelay({})).toBeUndefined();
    expect(requestedDelay({ "content-type": "application/json" })).toBeUndefined();
    expect(
      requestedDelay({
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "whenever",
      }),
    ).toBeUndefined();
  });
});

describe("nakDelay", () => {
  it("grows with the delivery count", () => {
    const ds = [1, 2, 3, 4].map((n) => nakDelay(n, 1000, 60_000, low));
    expect(ds).toEqual([500, 1000, 2000, 4000]);
  });

  it("is capped at maxMs", () => {
    for (const n of [7, 8, 20, 100]) {
      expect(nakDelay(n, 1000, 60_000, high)).toBeLessThanOrEqual(60_000);
      expect(nakDelay(n, 1000, 60_000, low)).toBe(30_000);
    }
  });
});
