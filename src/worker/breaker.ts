/**
 * Circuit breaker over upstream calls. It opens at once on an auth failure, or when
 * most of the last `window` calls failed transiently; while open the worker stops
 * pulling, and a probe closes it again.
 */

export type BreakerState = "closed" | "open";

export interface BreakerOptions {
  window: number;
  failureRatio: number;
}

export class CircuitBreaker {
  private readonly outcomes: boolean[] = [];
  private failures = 0;
  private _state: BreakerState = "closed";
  private _reason = "";

  constructor(
    private readonly o: BreakerOptions,
    private readonly onChange: (state: BreakerState, reason: string) => void = () => {},
  ) {}

  get state(): BreakerState {
    return this._state;
  }
  get isOpen(): boolean {
    return this._state === "open";
  }
  get reason(): string {
    return this._reason;
  }

  /** Records one upstream call: `ok` is false only for transient failures. */
  record(ok: boolean): void {
    this.outcomes.push(ok);
    if (!ok) this.failures++;
    if (this.outcomes.length > this.o.window) {
      if (!this.outcomes.shift()) this.failures--;
    }
    if (
      this._state === "closed" &&
      this.outcomes.length >= this.o.window &&
      this.failures / this.outcomes.length >= this.o.failureRatio
    ) {
      this.open(`${this.failures} of the last ${this.outcomes.length} upstream calls failed`);
    }
  }

  /** Opens the breaker (no-op when already open). */
  open(reason: string): void {
    if (this._state === "open") return;
    this._state = "open";
    this._reason = reason;
    this.onChange("open", reason);
  }

  /** Closes the breaker after a successful probe, forgetting past outcomes. */
  close(): void {
    if (this._state === "closed") return;
    this._state = "closed";
    this.outcomes.length = 0;
    this.failures = 0;
    this.onChange("closed", "probe succeeded");
  }
}
