import { describe, expect, it } from "vitest";
import { modelToken, rpmWindow, TokenWindow } from "../../src/worker/ratelimit.js";

describe("rpmWindow", () => {
  it("spreads a per-minute limit over short windows of at least 5 permits and 1 s", () => {
    expect(rpmWindow(600)).toEqual({ windowMs: 1000, permits: 10 });
    expect(rpmWindow(3000)).toEqual({ windowMs: 1000, permits: 50 });
    expect(rpmWindow(60)).toEqual({ windowMs: 5000, permits: 5 });
    expect(rpmWindow(7)).toEqual({ windowMs: 42858, permits: 5 });
  });

  it("never allows more than the limit over a minute", () => {
    for (const rpm of [1, 7, 60, 100, 600, 3500, 10_000]) {
      const { windowMs, permits } = rpmWindow(rpm);
      expect(Math.floor(60_000 / windowMs) * permits).toBeLessThanOrEqual(rpm);
    }
  });
});

describe("TokenWindow", () => {
  it("sums the last minute and forgets older events", () => {
    const w = new TokenWindow();
    w.add(0, 100);
    w.add(30_000, 50);
    expect(w.total(59_999)).toBe(150);
    expect(w.nextExpiry(59_999)).toBe(1);
    expect(w.total(60_000)).toBe(50);
    expect(w.total(90_001)).toBe(0);
    expect(w.nextExpiry(90_001)).toBe(0);
  });
});

describe("modelToken", () => {
  it("makes a model name safe as a subject token and stream name part", () => {
    expect(modelToken("gpt-4o-mini")).toBe("gpt-4o-mini");
    expect(modelToken("meta-llama/Llama-3.1-8B.Q4")).toBe("meta-llama_Llama-3_1-8B_Q4");
  });
});
