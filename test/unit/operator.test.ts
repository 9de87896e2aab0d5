/**
 * The operator page's pure parts: the 15-minute activity window and the request guards.
 */
import { describe, expect, it } from "vitest";
import { BUCKET_MS, BUCKETS, createActivity, quantile } from "../../src/http/activity.js";
import {
  checkHost,
  checkHttpExposure,
  checkOrigin,
  checkToken,
  isLoopbackHost,
} from "../../src/http/guard.js";
import type { Finished } from "../../src/worker/handle.js";

const fin = (over: Partial<Finished>): Finished => ({
  id: "x",
  outcome: "ok",
  tenant: "default",
  priority: "normal",
  model: "m",
  attempts: 1,
  calls: 1,
  queueWaitMs: 0,
  upstreamMs: 100,
  totalMs: 100,
  ...over,
});

describe("activity window", () => {
  it("counts answers per 10 s bucket with p50 / p95 within a bin's width", () => {
    const a = createActivity();
    const t0 = 1_000_000 * BUCKET_MS;
    for (let i = 1; i <= 100; i++) a.record(fin({ totalMs: i * 10, upstreamMs: i }), t0 + 5);
    a.record(fin({ outcome: "error", calls: 0, totalMs: 5 }), t0 + 6);
    a.record(fin({ outcome: "retry" }), t0 + 7);
    const s = a.snapshot(t0 + BUCKET_MS + 1);
    expect(s.buckets).toHaveLength(BUCKETS);
    const b = s.buckets.at(-2)!;
    expect(b).toMatchObject({ t: t0, completed: 101, errors: 1, other: 1 });
    expect(b.p50! / 500).toBeGreaterThan(0.8);
    expect(b.p50! / 500).toBeLessThan(1.25);
    expect(b.p95! / 950).toBeGreaterThan(0.8);
    expect(b.p95! / 950).toBeLessThan(1.25);
    expect(b.upstreamP50! / 50).toBeGreaterThan(0.8);
    expect(b.upstreamP50! / 50).toBeLessThan(1.25);
    expect(s.buckets.at(-1)).toEqual({ t: t0 + BUCKET_MS, completed: 0, errors: 0, other: 0 });
    expect(s.total.completed).toBe(101);
  });

  it("forgets what is older than 15 minutes, and reuses its slots", () => {
    const a = createActivity();
    const t0 = 2_000_000 * BUCKET_MS;
    a.record(fin({}), t0);
    expect(a.snapshot(t0 + (BUCKETS - 1) * BUCKET_MS).total.completed).toBe(1);
    expect(a.snapshot(t0 + BUCKETS * BUCKET_MS).total.completed).toBe(0);
    // The same ring slot, one lap later: the old counts are gone.
    a.record(fin({}), t0 + BUCKETS * BUCKET_MS);
    expect(a.snapshot(t0 + BUCKETS * BUCKET_MS).buckets.at(-1)!.completed).toBe(1);
  });

  it("quantile of an empty histogram is undefined", () => {
    expect(quantile(new Uint32Array(8), 0.5)).toBeUndefined();
  });
});

describe("guards", () => {
  it("knows loopback addresses and names", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"])
      expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ["0.0.0.0", "::", "", "10.0.0.1", "example.com", "128.0.0.1"])
      expect(isLoopbackHost(h), h).toBe(false);
  });

  it("refuses exposure without a token, and short tokens", () => {
    expect(() => checkHttpExposure({ enabled: true, host: "0.0.0.0", token: "" })).toThrow(
      /http\.token/,
    );
    expect(() => checkHttpExposure({ enabled: false, host: "0.0.0.0", token: "" })).not.toThrow();
    expect(() =>
      checkHttpExposure({ enabled: true, host: "0.0.0.0", token: "0123456789abcdef" }),
    ).not.toThrow();
    expect(() => checkHttpExposure({ enabled: true, host: "127.0.0.1", token: "abc" })).toThrow(
      /at least 16/,
    );
  });

  it("checks the bearer token, the Host and the Origin", () => {
    const t = "0123456789abcdef-token";
    expect(checkToken({}, "")).toBeUndefined();
    expect(checkToken({ authorization: `Bearer ${t}` }, t)).toBeUndefined();
    expect(checkToken({ authorization: `bearer ${t}` }, t)).toBeUndefined();
    expect(checkToken({ authorization: `Bearer ${t}x` }, t)?.status).toBe(401);
    expect(checkToken({}, t)?.message).not.toContain(t);
    expect(checkHost({ host: "127.0.0.1:9464" }, "")).toBeUndefined();
    expect(checkHost({ host: "evil.example:9464" }, "")?.status).toBe(403);
    expect(checkHost({ host: "evil.example:9464" }, t)).toBeUndefined();
    expect(checkOrigin({ host: "127.0.0.1:9464" })).toBeUndefined();
    expect(
      checkOrigin({ host: "127.0.0.1:9464", origin: "http://127.0.0.1:9464" }),
    ).toBeUndefined();
    expect(checkOrigin({ host: "127.0.0.1:9464", origin: "http://evil.example" })?.status).toBe(
      403,
    );
    expect(checkOrigin({ host: "127.0.0.1:9464", origin: "null" })?.status).toBe(403);
    expect(checkOrigin({ host: "127.0.0.1:9464", "sec-fetch-site": "same-site" })?.status).toBe(
      403,
    );
  });
});
