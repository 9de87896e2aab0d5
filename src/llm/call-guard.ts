/**
 * Time limits on one upstream call that the SDK's own timeout does not give. The SDK's
 * `timeout` ends when the response headers arrive; nothing bounds a streamed body (or,
 * with built-in fetch, a plain body) after that. A guard adds an overall deadline and,
 * once started with `touch()`, an idle timeout that every piece of data restarts.
 */

/** Which limit cut the call. */
export type Expiry = "idle" | "deadline";

export interface CallGuard {
  /** Aborted when the caller's signal aborts or a limit passes; give it to the SDK. */
  readonly signal: AbortSignal;
  /** The limit that passed, if one did (undefined when the caller aborted). */
  readonly expired: Expiry | undefined;
  /** Settles like `p`, or rejects with `onAbort()` as soon as `signal` aborts. */
  race<T>(p: Promise<T>): Promise<T>;
  /** Data arrived: (re)starts the idle timer. */
  touch(): void;
  /** Clears the timers and the listener on the caller's signal. */
  dispose(): void;
}

export interface GuardLimits {
  deadlineMs: number;
  idleMs: number;
  /** the error `race` rejects with when the signal aborts */
  onAbort: () => Error;
}

/** Starts guarding one call; call `dispose()` when it is over. */
export function guardCall(parent: AbortSignal | undefined, o: GuardLimits): CallGuard {
  const ac = new AbortController();
  let expired: Expiry | undefined;
  let idle: NodeJS.Timeout | undefined;
  const expire = (why: Expiry) => {
    if (ac.signal.aborted) return;
    expired = why;
    ac.abort();
  };
  const deadline = setTimeout(() => expire("deadline"), o.deadlineMs);
  const relay = () => ac.abort();
  if (parent?.aborted) ac.abort();
  else parent?.addEventListener("abort", relay, { once: true });
  const aborted = new Promise<never>((_, reject) => {
    const fire = () => reject(o.onAbort());
    if (ac.signal.aborted) fire();
    else ac.signal.addEventListener("abort", fire, { once: true });
  });
  // Only ever observed through race().
  aborted.catch(() => undefined);
  return {
    signal: ac.signal,
    get expired() {
      return expired;
    },
    race<T>(p: Promise<T>): Promise<T> {
      // The loser settles later, unobserved: never an unhandled rejection.
      p.catch(() => undefined);
      return Promise.race([p, aborted]);
    },
    touch() {
      clearTimeout(idle);
      if (!ac.signal.aborted) idle = setTimeout(() => expire("idle"), o.idleMs);
    },
    dispose() {
      clearTimeout(deadline);
      clearTimeout(idle);
      parent?.removeEventListener("abort", relay);
    },
  };
}
