/**
 * Pulls only for free slots, from the lane consumers, in weighted order: at most
 * `capacity` messages are ever delivered to this process and not yet finished (in
 * flight + requested), so nothing waits in a client-side buffer burning its
 * ack_wait, whatever the backlog.
 *
 * It sends its own pull requests (one inbox subscription for all of them) rather
 * than nats.js's fetch(), because fair scheduling needs two kinds:
 * - `no_wait` pulls for lanes known to have queued work (the server answers at once,
 *   with messages or "404 No Messages", so a stale queue depth costs one round trip
 *   and never holds slots);
 * - one-slot long-polls (`expires`) on the idle lanes, so a request arriving at an
 *   idle proxy starts at once.
 * Queue depths come from each delivery (its `pending` count), from no_wait answers
 * and from one consumer-list call every `pollMs`, which is how a lane that was idle
 * is noticed while every slot is busy.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import {
  createInbox,
  nuid,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";
import type { Logger } from "../log.js";
import type { Lane } from "../nats/lanes.js";
import { WeightedScheduler } from "./scheduler.js";
import { toWorkMsg, type WorkMsg } from "./work-msg.js";

export interface PullerOptions {
  capacity: number;
  /** lifetime of a long-poll on an idle lane */
  expiresMs: number;
  /** how often the lanes' queue depths are read */
  pollMs: number;
  /** nak delay for a message that arrives while intake is paused */
  pausedNakDelayMs: number;
  /** JetStream API prefix */
  apiPrefix?: string;
  /** true while a tenant may not start more calls (its max_concurrency is reached) */
  tenantBlocked?: (tenant: string) => boolean;
}

interface LaneState {
  readonly lane: Lane;
  /** messages waiting in the consumer, as last seen */
  pending: number;
  /** the consumer has unacknowledged messages that may be due for redelivery */
  maybeRedelivery: boolean;
  /** slots reserved by its outstanding pull */
  requested: number;
  inflight: number;
  /**
   * The lane's one outstanding pull request. Delivered messages carry their own
   * subject, not the pull's, so with one pull per lane a message is always counted
   * against the right one.
   */
  pull: string | undefined;
}

interface Pull {
  readonly lane: number;
  remaining: number;
  readonly noWait: boolean;
  readonly timer: NodeJS.Timeout;
}

/** How long past its expiry a pull is given up client-side (a server restart drops it). */
const PULL_GRACE_MS = 3000;

export class LanePuller {
  private readonly lanes: LaneState[];
  private readonly byConsumer = new Map<string, number>();
  private readonly sched: WeightedScheduler;
  private readonly pulls = new Map<string, Pull>();
  private inflight = 0;
  private requested = 0;
  private running = false;
  private paused = false;
  /** when the last outstanding pull request ends on the server */
  private pullsEndAt = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly inbox: string;
  private sub: Subscription | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling = false;
  private lastMissingWarn = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    lanes: readonly Lane[],
    private readonly handler: (m: WorkMsg, lane: Lane) => Promise<void>,
    private readonly o: PullerOptions,
    private readonly log: Logger,
  ) {
    this.lanes = lanes.map((lane) => ({
      lane,
      pending: 0,
      maybeRedelivery: true,
      requested: 0,
      inflight: 0,
      pull: undefined,
    }));
    lanes.forEach((l, i) => this.byConsumer.set(l.consumer, i));
    this.sched = new WeightedScheduler(lanes);
    // Under the connection's inbox prefix: the permissions that allow its replies allow these.
    this.inbox = createInbox(
      (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix ?? "",
    );
  }

  get inFlight(): number {
    return this.inflight;
  }

  /** In flight per tenant in this process. */
  inFlightOf(tenant: string): number {
    let n = 0;
    for (const l of this.lanes) if (l.lane.tenant === tenant) n += l.inflight;
    return n;
  }

  /** A nak delay that lands after every pull request this process has outstanding. */
  quietDelay(): number {
    return Math.max(0, this.pullsEndAt - Date.now()) + 250;
  }

  /** Begins pulling. */
  start(): void {
    this.running = true;
    this.sub = this.nc.subscribe(`${this.inbox}.*`, {
      callback: (err, m) => {
        if (!err) this.onMessage(m);
      },
    });
    this.pollTimer = setInterval(() => void this.poll(), this.o.pollMs);
    this.pollTimer.unref();
    void this.watchReconnects();
    void this.poll();
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
    clearInterval(this.pollTimer);
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Ends the inbox subscription (after stopPulling and idle). */
  close(): void {
    for (const p of this.pulls.values()) clearTimeout(p.timer);
    this.pulls.clear();
    this.sub?.unsubscribe();
  }

  /** Nudges the scheduler (a tenant's limit freed up, say). */
  kick(): void {
    this.pump();
  }

  /** Whether lane `i` has work beyond what is already requested (`extra`: picked this round). */
  private hasWork(i: number, extra: number): boolean {
    const s = this.lanes[i]!;
    if (this.o.tenantBlocked?.(s.lane.tenant)) return false;
    // A long-poll out on the lane takes whatever arrives there.
    if (s.pull !== undefined && this.pulls.get(s.pull)?.noWait === false) return false;
    const reserved = s.requested + extra;
    return s.pending - reserved > 0 || (s.maybeRedelivery && reserved === 0);
  }

  private pump(): void {
    if (!this.running || this.paused) return;
    let free = this.o.capacity - this.inflight - this.requested;
    if (free <= 0) return;
    const alloc = new Map<number, number>();
    while (free > 0) {
      const i = this.sched.pick((x) => this.hasWork(x, alloc.get(x) ?? 0));
      if (i === undefined) break;
      if (this.lanes[i]!.pull !== undefined) {
        // The lane whose turn it is has a no_wait pull out (answered within a round
        // trip): keep the slots for it rather than hand its share to the others.
        this.sched.refund(i, 1);
        return;
      }
      alloc.set(i, (alloc.get(i) ?? 0) + 1);
      free--;
    }
    for (const [i, n] of alloc) this.pull(i, n, true);
    // Slots left while a lane with known work has a pull out wait for it to come back.
    const waiting = this.lanes.some(
      (s) => s.pending > s.requested && !this.o.tenantBlocked?.(s.lane.tenant),
    );
    if (free > 0 && !waiting) this.longPolls(free);
  }

  /**
   * One-slot long-polls on the idle lanes, highest weight first: a request arriving
   * on an idle lane starts at once, and its delivery's `pending` count tells whether
   * more wait, which the next pump fetches with no_wait. Holding one slot per idle
   * lane (not a share), and no more than a quarter of them, keeps the rest free for
   * whichever lane gets work.
   */
  private longPolls(free: number): void {
    const idle = this.lanes
      .map((s, i) => ({ s, i, w: s.lane.priorityWeight * s.lane.tenantWeight }))
      .filter(({ s }) => s.pull === undefined && !this.o.tenantBlocked?.(s.lane.tenant))
      .sort((a, b) => b.w - a.w);
    // At most a quarter of the slots wait in long-polls; lanes without one are found
    // by the depth poll.
    const polls = this.lanes.filter(
      (s) => s.pull !== undefined && !this.pulls.get(s.pull)?.noWait,
    ).length;
    const room = Math.max(1, Math.ceil(this.o.capacity / 4)) - polls;
    for (const { i } of idle.slice(0, Math.min(free, room))) this.pull(i, 1, false);
  }

  private pull(i: number, n: number, noWait: boolean): void {
    const s = this.lanes[i]!;
    const id = nuid.next();
    const expiresMs = noWait ? 0 : this.o.expiresMs;
    const timer = setTimeout(() => this.endPull(id, false), expiresMs + PULL_GRACE_MS);
    timer.unref();
    this.pulls.set(id, { lane: i, remaining: n, noWait, timer });
    s.pull = id;
    s.requested += n;
    this.requested += n;
    if (!noWait) this.pullsEndAt = Math.max(this.pullsEndAt, Date.now() + expiresMs);
    const body = noWait ? { batch: n, no_wait: true } : { batch: n, expires: expiresMs * 1e6 };
    try {
      this.nc.publish(
        `${this.o.apiPrefix ?? "$JS.API"}.CONSUMER.MSG.NEXT.${this.stream}.${s.lane.consumer}`,
        JSON.stringify(body),
        { reply: `${this.inbox}.${id}` },
      );
    } catch (e) {
      // Connection closing: give the slots back; the reconnect or stop deals with the rest.
      this.log.debug({ err: e }, "pull request not sent");
      this.endPull(id, false);
    }
  }

  /** A pull request is over: release what it did not deliver. */
  private endPull(id: string, drained: boolean): void {
    const p = this.pulls.get(id);
    if (!p) return;
    this.pulls.delete(id);
    clearTimeout(p.timer);
    const s = this.lanes[p.lane]!;
    s.requested -= p.remaining;
    this.requested -= p.remaining;
    if (s.pull === id) s.pull = undefined;
    if (p.remaining > 0 && p.noWait) this.sched.refund(p.lane, p.remaining);
    if (drained) {
      s.pending = 0;
      s.maybeRedelivery = false;
    }
  }

  private onMessage(m: Msg): void {
    const status = m.headers?.code ?? 0;
    if (status !== 0 && m.data.length === 0) {
      // A status is addressed to the pull's own reply subject.
      const id = m.subject.slice(this.inbox.length + 1);
      const p = this.pulls.get(id);
      if (status === 100) return; // heartbeat (not asked for)
      if (status === 503 || status === 409) this.warnPull(p, status, m.headers?.description ?? "");
      // 404 / 408 on a no_wait pull: the lane has nothing more now.
      this.endPull(id, p?.noWait === true && (status === 404 || status === 408));
      this.pump();
      return;
    }
    const wm = toWorkMsg(m);
    if (!wm) return;
    const laneIndex = this.byConsumer.get(wm.info.consumer);
    if (laneIndex === undefined) {
      wm.nak(this.quietDelay());
      return;
    }
    const s = this.lanes[laneIndex]!;
    s.pending = wm.info.pending;
    const id = s.pull;
    const p = id !== undefined ? this.pulls.get(id) : undefined;
    if (id !== undefined && p && p.remaining > 0) {
      p.remaining--;
      s.requested--;
      this.requested--;
      if (p.remaining === 0) this.endPull(id, false);
    } else if (this.inflight + this.requested >= this.o.capacity) {
      // A pull given up after a reconnect delivered after all, and no slot is free.
      wm.nak(this.quietDelay());
      return;
    }
    if (!this.running) {
      wm.nak(this.quietDelay());
      return;
    }
    if (this.paused) {
      wm.nak(Math.max(this.o.pausedNakDelayMs, this.quietDelay()));
      return;
    }
    this.inflight++;
    s.inflight++;
    void this.run(wm, s);
    this.pump();
  }

  private warnPull(p: Pull | undefined, status: number, description: string): void {
    if (Date.now() - this.lastMissingWarn < 30_000) return;
    this.lastMissingWarn = Date.now();
    const consumer = p ? this.lanes[p.lane]!.lane.consumer : "?";
    this.log.warn(
      { consumer, status, description },
      status === 503
        ? `pull refused: consumer ${this.stream}/${consumer} is missing (run "nats-openai-proxy streams apply")`
        : `pull ended by the server: ${description}`,
    );
  }

  private async run(m: WorkMsg, s: LaneState): Promise<void> {
    try {
      await this.handler(m, s.lane);
    } catch (e) {
      this.log.error({ err: e, subject: m.subject }, "handler threw; message left to redeliver");
    } finally {
      this.inflight--;
      s.inflight--;
      if (this.inflight === 0) for (const w of this.idleWaiters.splice(0)) w();
      this.pump();
    }
  }

  /** Reads every lane consumer's depth in one request. */
  private async poll(): Promise<void> {
    if (this.polling || !this.running) return;
    this.polling = true;
    try {
      const page = await this.jsm.consumers.list(this.stream).next();
      for (const ci of page) {
        const i = this.byConsumer.get(ci.name);
        if (i === undefined) continue;
        const s = this.lanes[i]!;
        s.pending = ci.num_pending;
        // Redeliveries due are not in num_pending: a lane with unacknowledged messages
        // beyond its own in flight gets a no_wait probe.
        s.maybeRedelivery = ci.num_ack_pending > s.inflight + s.requested;
      }
    } catch (e) {
      this.log.debug({ err: e }, "lane depth poll failed");
    } finally {
      this.polling = false;
    }
    this.pump();
  }

  private async watchReconnects(): Promise<void> {
    for await (const st of this.nc.status()) {
      if (!this.running) return;
      // The server forgot our pull requests (restart) or dropped them with the
      // connection: start over. A late delivery for a forgotten pull is still handled.
      if (st.type === "reconnect") {
        for (const id of [...this.pulls.keys()]) this.endPull(id, false);
        void this.poll();
      }
    }
  }
}
