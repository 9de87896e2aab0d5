/**
 * Pulls only for free slots: at most `capacity` messages are ever delivered to this
 * process and not yet finished (in flight + requested), so nothing waits in a
 * client-side buffer burning its ack_wait, whatever the backlog.
 */
import type { Consumer, ConsumerMessages, JsMsg } from "nats";
import type { Logger } from "../log.js";
import { sleep } from "./sleep.js";

export interface PullerOptions {
  capacity: number;
  expiresMs: number;
}

export class SlotPuller {
  private inflight = 0;
  private requested = 0;
  private running = false;
  private paused = false;
  private readonly fetches = new Set<ConsumerMessages>();
  private readonly idleWaiters: (() => void)[] = [];
  private readonly stopCtl = new AbortController();
  private capacity: number;

  constructor(
    private readonly consumer: Consumer,
    private readonly handler: (m: JsMsg) => Promise<void>,
    private readonly o: PullerOptions,
    private readonly log: Logger,
  ) {
    this.capacity = o.capacity;
  }

  get inFlight(): number {
    return this.inflight;
  }

  /** Begins pulling. */
  start(): void {
    this.running = true;
    this.pump();
  }

  /** Stops asking for messages (in-flight work goes on). */
  pause(): void {
    this.paused = true;
    for (const f of this.fetches) f.stop();
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /** Changes the number of slots (adaptive concurrency). */
  setCapacity(n: number): void {
    this.capacity = Math.max(1, n);
    this.pump();
  }

  /** Stops pulling for good; messages that still arrive are nak'ed at once. */
  stopPulling(): void {
    this.running = false;
    this.stopCtl.abort();
    for (const f of this.fetches) f.stop();
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private pump(): void {
    if (!this.running || this.paused) return;
    const want = this.capacity - this.inflight - this.requested;
    if (want <= 0) return;
    // While a pull is outstanding, wait for a few free slots rather than sending a
    // pull per finished message: fewer round trips, same bound.
    if (this.requested > 0 && want < Math.max(1, this.capacity >> 3)) return;
    this.requested += want;
    void this.fetch(want);
  }

  private async fetch(n: number): Promise<void> {
    let got = 0;
    let failed = false;
    try {
      const iter = await this.consumer.fetch({ max_messages: n, expires: this.o.expiresMs });
      this.fetches.add(iter);
      try {
        for await (const m of iter) {
          got++;
          this.requested--;
          if (!this.running) {
            m.nak();
            continue;
          }
          this.inflight++;
          void this.run(m);
        }
      } finally {
        this.fetches.delete(iter);
      }
    } catch (e) {
      failed = true;
      this.log.debug({ err: e }, "pull failed; retrying");
    } finally {
      this.requested -= n - got;
    }
    // A failing pull (consumer missing, connection closed) must not spin.
    if (failed) await sleep(1000, this.stopCtl.signal);
    this.pump();
  }

  private async run(m: JsMsg): Promise<void> {
    try {
      await this.handler(m);
    } catch (e) {
      this.log.error({ err: e, subject: m.subject }, "handler threw; message left to redeliver");
    } finally {
      this.inflight--;
      if (this.inflight === 0) for (const w of this.idleWaiters.splice(0)) w();
      this.pump();
    }
  }
}
