import { describe, expect, it } from "vitest";
import { WeightedScheduler, type SchedulerLane } from "../../src/worker/scheduler.js";

const lane = (priority: SchedulerLane["priority"], priorityWeight: number, tenantWeight = 1) => ({
  priority,
  priorityWeight,
  tenantWeight,
});

/** Picks `n` slots with the given lanes eligible; returns the count per lane. */
function run(s: WeightedScheduler, n: number, eligible: (i: number) => boolean): number[] {
  const counts: number[] = [];
  for (let k = 0; k < n; k++) {
    const i = s.pick(eligible);
    if (i === undefined) break;
    counts[i] = (counts[i] ?? 0) + 1;
  }
  return counts;
}

describe("weighted scheduler", () => {
  const lanes = [lane("high", 8), lane("normal", 4), lane("low", 1)];

  it("gives every backlogged priority its weight's share", () => {
    const counts = run(new WeightedScheduler(lanes), 1300, () => true);
    expect(counts).toEqual([800, 400, 100]);
  });

  it("serves only the lanes with work, and none at all when none has work", () => {
    const s = new WeightedScheduler(lanes);
    expect(run(s, 10, (i) => i === 2)).toEqual([undefined, undefined, 10]);
    expect(s.pick(() => false)).toBeUndefined();
  });

  it("serves a lane that just got work next, without a backlog of credit", () => {
    const s = new WeightedScheduler(lanes);
    run(s, 1000, (i) => i === 2); // low alone for a long time
    // high arrives: it is served next, then gets 8 of every 9 slots, not 1000 in a row
    expect(s.pick(() => true)).toBe(0);
    const counts = run(s, 90, (i) => i !== 1);
    expect(counts[0]).toBeGreaterThanOrEqual(79);
    expect(counts[0]).toBeLessThanOrEqual(81);
    expect(counts[2]).toBeGreaterThanOrEqual(9);
  });

  it("shares a priority's slots among its tenants by tenant weight", () => {
    const s = new WeightedScheduler([lane("normal", 4, 1), lane("normal", 4, 3), lane("low", 1)]);
    const counts = run(s, 400, (i) => i < 2);
    expect(counts).toEqual([100, 300]);
  });

  it("keeps tenants of one priority apart from the other priorities' shares", () => {
    // two high tenants and one low: high as a whole still gets 8 of 9 slots
    const s = new WeightedScheduler([lane("high", 8), lane("high", 8), lane("low", 1)]);
    const counts = run(s, 900, () => true);
    expect(counts).toEqual([400, 400, 100]);
  });

  it("takes back the slots a lane did not use", () => {
    const s = new WeightedScheduler([lane("high", 1), lane("low", 1)]);
    const first = s.pick(() => true)!;
    s.refund(first, 1);
    // after the refund the same lane is still first in line
    expect(s.pick(() => true)).toBe(first);
  });
});
