/**
 * Demonstrates what passing one long-lived AbortSignal to every openai SDK call costs: the
 * SDK (client.mjs, fetchWithTimeout) adds an `abort` listener to the caller's signal on each
 * call and never removes it, and Node's EventTarget walks its whole listener list on every
 * addEventListener. So CPU per call and heap grow with the number of calls made so far.
 *
 *   node --expose-gc --import tsx bench/signal-leak.ts [--calls 40000]
 *
 * Prints, per block of 5,000 calls at C = 64 against the local test double (a child
 * process): throughput, this process's CPU per call and heap after a GC — once with a
 * per-call signal linked to a long-lived one and unlinked when the call ends, once with the
 * long-lived signal itself (what src/worker/handle.ts does with the worker's hardStop signal).
 */
import { setMaxListeners } from "node:events";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createOpenAIClient } from "../src/llm/openai-client.js";
import { startDevOpenAIChild } from "./lib/services.js";

const { values } = parseArgs({ options: { calls: { type: "string", default: "40000" } } });
const CALLS = Number(values.calls);
const C = 64;
const BLOCK = 5000;

const dev = await startDevOpenAIChild(0);
const chat = createOpenAIClient({ apiKey: "x", baseURL: dev.url, timeoutMs: 60_000 });
const gc = (globalThis as { gc?: () => void }).gc;

async function run(mode: "shared" | "per-call"): Promise<void> {
  const hardStop = new AbortController();
  // As src/worker/worker.ts does; it also hides the MaxListenersExceededWarning.
  setMaxListeners(0, hardStop.signal);
  let i = 0;
  let t = performance.now();
  let u = process.cpuUsage();
  const one = async (): Promise<void> => {
    while (i < CALLS) {
      const k = ++i;
      const params = { model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] };
      if (mode === "shared") {
        await chat.complete(params, { signal: hardStop.signal });
      } else {
        const ac = new AbortController();
        const onStop = () => ac.abort();
        hardStop.signal.addEventListener("abort", onStop, { once: true });
        try {
          await chat.complete(params, { signal: ac.signal });
        } finally {
          hardStop.signal.removeEventListener("abort", onStop);
        }
      }
      if (k % BLOCK === 0) {
        gc?.();
        const c = process.cpuUsage(u);
        const now = performance.now();
        const heap = process.memoryUsage().heapUsed / 2 ** 20;
        process.stdout.write(
          `${mode.padEnd(8)} calls ${String(k).padStart(6)}: ${(BLOCK / ((now - t) / 1000)).toFixed(0).padStart(5)} calls/s, ` +
            `${((c.user + c.system) / BLOCK).toFixed(0).padStart(5)} µs CPU/call, heap ${heap.toFixed(0)} MB\n`,
        );
        t = now;
        u = process.cpuUsage();
      }
    }
  };
  await Promise.all(Array.from({ length: C }, one));
}

try {
  if (!gc) process.stdout.write("(run with node --expose-gc for heap figures after a GC)\n");
  // per-call first, so that JIT warm-up does not count against the shared signal
  await run("per-call");
  await run("shared");
} finally {
  await dev.stop();
}
process.exit(0);
