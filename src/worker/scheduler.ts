/**
 * Weighted fair choice of the lane that gets the next free slot: hierarchical stride
 * scheduling, first among the priorities that have work (weights high 8, normal 4,
 * low 1 by default), then among that priority's tenants with work (by tenant
 * weight). A lane that was idle joins at the current virtual time, so it is served
 * next (ties go to the higher priority) but never gets a backlog of credit; with
 * every lane backlogged each gets exactly its weight's share. Pure: no I/O, no clock.
 */
import { PRIORITIES, type Priority } from "../protocol/lanes.js";

export interface SchedulerLane {
  readonly priority: Priority;
  readonly priorityWeight: number;
  readonly tenantWeight: number;
}

export class WeightedScheduler {
  private readonly prioPass = new Map<Priority, number>();
  private readonly lanePass: number[];
  private prioTime = 0;
  private readonly laneTime = new Map<Priority, number>();
  private readonly prioWeight = new Map<Priority, number>();

  constructor(private readonly lanes: readonly SchedulerLane[]) {
    this.lanePass = lanes.map(() => 0);
    for (const l of lanes) this.prioWeight.set(l.priority, l.priorityWeight);
  }

  /**
   * The lane for one slot among those for which `eligible(i)` is true, charged for it.
   * @returns the lane's index, or undefined when no lane is eligible
   */
  pick(eligible: (i: number) => boolean): number | undefined {
    let bestP: Priority | undefined;
    let bestPass = Infinity;
    const candidates = new Map<Priority, number[]>();
    this.lanes.forEach((l, i) => {
      if (!eligible(i)) return;
      const list = candidates.get(l.priority);
      if (list) list.push(i);
      else candidates.set(l.priority, [i]);
    });
    for (const p of PRIORITIES) {
      if (!candidates.has(p)) continue;
      const pass = Math.max(this.prioPass.get(p) ?? 0, this.prioTime);
      this.prioPass.set(p, pass);
      if (pass < bestPass) {
        bestPass = pass;
        bestP = p;
      }
    }
    if (bestP === undefined) return undefined;
    const vt = this.laneTime.get(bestP) ?? 0;
    let best = -1;
    for (const i of candidates.get(bestP)!) {
      const pass = Math.max(this.lanePass[i]!, vt);
      this.lanePass[i] = pass;
      if (best < 0 || pass < this.lanePass[best]!) best = i;
    }
    this.prioTime = bestPass;
    this.laneTime.set(bestP, this.lanePass[best]!);
    this.charge(best, 1);
    return best;
  }

  /** Gives back `n` slots charged to lane `i` that it did not use (its queue was empty). */
  refund(i: number, n: number): void {
    this.charge(i, -n);
  }

  private charge(i: number, n: number): void {
    const l = this.lanes[i]!;
    this.prioPass.set(
      l.priority,
      (this.prioPass.get(l.priority) ?? 0) + n / this.prioWeight.get(l.priority)!,
    );
    this.lanePass[i] = this.lanePass[i]! + n / l.tenantWeight;
  }
}
