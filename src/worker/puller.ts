/**
 * Pulls only for free slots: at most `capacity` messages are ever delivered to this
 * process and not yet finished (in flight + requested), so nothing waits in a
 * client-side buffer burning its ack_wait, whatever the backlog.
 *
 * Pull requests are never abandoned early. On nats-server before 2.11, a message
 * redelivered (after a nak) into a pull request whose subscriber is gone stays stuck
 * until ack_wait and rewinds the consumer (nats-server #5305). So pausing or stopping
 * only stops issuing new pulls; outstanding ones run to their expiry, and naks sent
 * meanwhile carry a delay past that expiry (`quietDelay()`).
 */
import type { Consumer, JsMsg } from "@nats-io/jetstream";
import type { Logger } from "../log.js";
import { sleep } from "./sleep.js";

export interface PullerOptions {
  capacity: number;
  expiresMs: number;
  /** nak delay for a message that arrives while intake is paused */
  pausedNakDelayMs: number;
}

export class SlotPuller {
  private inflight = 0;
  private requested = 0;
  private running = false;
  private paused = false;
  /** when the last outstanding pull request expires on the server */
  private pullsEndAt = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly stopCtl = new AbortController();
  private readonly capacity: number;

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

  /** A nak delay that lands after every pull request this process has outstanding. */
  quietDelay(): number {
    return Math.max(0, this.pullsEndAt - Date.now()) + 250;
  }

  /** Begins pulling. */
  start(): void {
    this.running = true;
    this.pump();
  }

  /** Stops asking for messages (in-flight work goes on). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /** Stops pulling for good; messages that still arrive are handed back with a delay. */
  stopPulling(): void {
    this.running = false;
    this.stopCtl.abort();
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
      this.pullsEndAt = Math.max(this.pullsEndAt, Date.now() + this.o.expiresMs);
      const iter = await this.consumer.fetch({ max_messages: n, expires: this.o.expiresMs });
      for await (const m of iter) {
        got++;
        this.requested--;
        if (!this.running) {
          m.nak(this.quietDelay());
          continue;
        }
        if (this.paused) {
          m.nak(Math.max(this.o.pausedNakDelayMs, this.quietDelay()));
          continue;
        }
        this.inflight++;
        void this.run(m);
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
