import { describe, expect, it, vi } from "vitest";
import { CircuitBreaker, type BreakerState } from "../../src/worker/breaker.js";

function breaker(window: number, failureRatio: number) {
  const onChange = vi.fn<(state: BreakerState, reason: string) => void>();
  return { b: new CircuitBreaker({ window, failureRatio }, onChange), onChange };
}

const recordAll = (b: CircuitBreaker, outcomes: boolean[]) => outcomes.forEach((o) => b.record(o));

describe("CircuitBreaker", () => {
  it("starts closed", () => {
    const { b, onChange } = breaker(4, 0.5);
    expect(b.state).toBe("closed");
    expect(b.isOpen).toBe(false);
    expect(b.reason).toBe("");
    expect(onChange).not.toHaveBeenCalled();
  });

  it("stays closed below a full window, even if every call failed", () => {
    const { b, onChange } = breaker(5, 0.5);
    recordAll(b, [false, false, false, false]);
    expect(b.state).toBe("closed");
    expect(onChange).not.toHaveBeenCalled();
  });

  it("opens when the failure ratio over a full window reaches the threshold", () => {
    const { b, onChange } = breaker(4, 0.5);
    recordAll(b, [false, true, false]);
    expect(b.isOpen).toBe(false);
    b.record(true); // 2 of 4 failed = 0.5
    expect(b.isOpen).toBe(true);
    expect(b.state).toBe("open");
    expect(onChange).toHaveBeenCalledTimes(1);
    expect(onChange).toHaveBeenCalledWith("open", "2 of the last 4 upstream calls failed");
    expect(b.reason).toBe("2 of the last 4 upstream calls failed");
  });

  it("stays closed when the ratio is below the threshold", () => {
    const { b, onChange } = breaker(4, 0.75);
    recordAll(b, [false, true, false, true, true, false, true]);
    expect(b.state).toBe("closed");
    expect(onChange).not.toHaveBeenCalled();
  });

  it("slides the window: old outcomes stop counting", () => {
    const { b } = breaker(4, 0.75);
    recordAll(b, [false, false, true, true, true, true]); // window: T T T T
    recordAll(b, [false, false]); // window: T T F F
    expect(b.isOpen).toBe(false);
    b.record(false); // window: T F F F
    expect(b.isOpen).toBe(true);
  });

  it("keeps closed on successes", () => {
    const { b, onChange } = breaker(3, 0.5);
    recordAll(b, Array<boolean>(100).fill(true));
    expect(b.state).toBe("closed");
    expect(onChange).not.toHaveBeenCalled();
  });

  it("calls onChange exactly once per transition", () => {
    const { b, onChange } = breaker(2, 0.5);
    recordAll(b, [false, false, false, false]); // opens on the 2nd, stays open
    expect(onChange).toHaveBeenCalledTimes(1);
    b.close();
    b.close();
    expect(onChange).toHaveBeenCalledTimes(2);
    expect(onChange).toHaveBeenLastCalledWith("closed", "probe succeeded");
    expect(b.state).toBe("closed");
  });

  it("open() is idempotent and keeps the first reason", () => {
    const { b, onChange } = breaker(10, 0.5);
    b.open("401 from the API");
    b.open("something else");
    expect(onChange).toHaveBeenCalledTimes(1);
    expect(onChange).toHaveBeenCalledWith("open", "401 from the API");
    expect(b.reason).toBe("401 from the API");
    expect(b.isOpen).toBe(true);
  });

  it("close() forgets past outcomes: a full new window is needed to reopen", () => {
    const { b, onChange } = breaker(3, 0.6);
    recordAll(b, [false, false, false]);
    expect(b.isOpen).toBe(true);
    b.close();
    recordAll(b, [false, false]);
    expect(b.isOpen).toBe(false);
    b.record(false);
    expect(b.isOpen).toBe(true);
    expect(onChange.mock.calls.map((c) => c[0])).toEqual(["open", "closed", "open"]);
  });

  it("close() on a closed breaker does nothing", () => {
    const { b, onChange } = breaker(2, 0.5);
    b.record(false);
    b.close();
    expect(onChange).not.toHaveBeenCalled();
    b.record(false); // the earlier failure still counts: window is now full
    expect(b.isOpen).toBe(true);
  });

  it("works without an onChange callback", () => {
    const b = new CircuitBreaker({ window: 1, failureRatio: 1 });
    b.record(false);
    expect(b.isOpen).toBe(true);
  });
});
