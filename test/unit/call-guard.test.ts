import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { guardCall } from "../../src/llm/call-guard.js";

class Aborted extends Error {}
const limits = { deadlineMs: 1000, idleMs: 100, onAbort: () => new Aborted("aborted") };
const never = () => new Promise<never>(() => undefined);

describe("guardCall", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("cuts a call at the deadline", async () => {
    const g = guardCall(undefined, limits);
    const p = g.race(never());
    const seen = p.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(999);
    expect(g.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await seen).toBeInstanceOf(Aborted);
    expect([g.signal.aborted, g.expired]).toEqual([true, "deadline"]);
    g.dispose();
  });

  it("the idle timer runs only once touched, and each touch restarts it", async () => {
    const g = guardCall(undefined, limits);
    await vi.advanceTimersByTimeAsync(300); // no idle limit before the first touch
    expect(g.signal.aborted).toBe(false);
    g.touch();
    for (let i = 0; i < 5; i++) {
      await vi.advanceTimersByTimeAsync(90);
      g.touch();
    }
    expect(g.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(100);
    expect(g.expired).toBe("idle");
    g.dispose();
  });

  it("follows the caller's signal without calling it an expiry", async () => {
    const parent = new AbortController();
    const g = guardCall(parent.signal, limits);
    const seen = g.race(never()).catch((e: unknown) => e);
    parent.abort();
    expect(await seen).toBeInstanceOf(Aborted);
    expect([g.signal.aborted, g.expired]).toEqual([true, undefined]);
    g.dispose();
  });

  it("passes a result through and, disposed, fires nothing", async () => {
    const g = guardCall(undefined, limits);
    g.touch();
    await expect(g.race(Promise.resolve(42))).resolves.toBe(42);
    g.dispose();
    await vi.advanceTimersByTimeAsync(5000);
    expect(g.signal.aborted).toBe(false);
  });
});
