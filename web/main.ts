/**
 * The operator page: polls /api/overview and the first dead letters every two seconds and
 * renders them; replay and delete buttons call the API. All text goes in as textContent.
 */
import { ApiError, Unauthorized, call, forgetToken, saveToken, savedToken } from "./api.js";
import { sparkline } from "./charts.js";
import type { DeadLetterView, DlqPageView, Overview, Priority } from "./types.js";

const POLL_MS = 2000;
const PAGE = 50;
const PRIORITIES: readonly Priority[] = ["high", "normal", "low"];

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} missing`);
  return e as T;
};

function td(text: string, cls?: string): HTMLTableCellElement {
  const c = document.createElement("td");
  c.textContent = text;
  if (cls) c.className = cls;
  return c;
}

function fmtMs(v: number | undefined): string {
  if (v === undefined) return "–";
  return v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s` : `${Math.round(v)} ms`;
}

function lastDefined<T>(xs: readonly (T | undefined)[]): T | undefined {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i] !== undefined) return xs[i];
  return undefined;
}

let timer: number | undefined;
let loaded = PAGE;
let nextAfter: number | undefined;
let running: Promise<void> | undefined;
let again = false;
/** bumped by every replay and delete: answers read before it are stale */
let epoch = 0;

function renderOverview(o: Overview): void {
  $("queued").textContent = String(o.queue.pending);
  $("queued-sub").textContent = `${o.queue.ackPending} delivered, not yet acked`;
  $("inflight").textContent = String(o.worker.inFlight);
  $("inflight-sub").textContent = `of ${o.worker.concurrency} slots in this process`;
  const b = $("breaker");
  b.textContent = o.worker.breaker;
  b.className = `big ${o.worker.breaker === "closed" ? "ok" : "bad"}`;
  $("worker-state").textContent = `worker ${o.worker.state.toLowerCase()}, v${o.version}`;
  $("dlq-count").textContent = String(o.dlq.messages);
  $("dlq-count").className = `big ${o.dlq.messages > 0 ? "warn" : ""}`;
  $("dlq-stream").textContent = o.dlq.stream;
  $("stream").textContent = o.stream;

  const bs = o.activity.buckets;
  const secs = o.activity.bucketMs / 1000;
  const rate = bs.map((x) => x.completed / secs);
  const errs = bs.map((x) => x.errors / secs);
  const mins = Math.round((bs.length * o.activity.bucketMs) / 60_000);
  // The current bucket is partial: report the last complete one.
  const prev = bs.at(-2);
  $("tp-now").textContent =
    `${prev ? (prev.completed / secs).toFixed(1) : "0"}/s · ${o.activity.total.completed} in ${mins} min, ${o.activity.total.errors} errors`;
  $("chart-throughput").replaceChildren(
    sparkline(
      [
        { values: rate, kind: "area" },
        { values: errs, kind: "err" },
      ],
      `answered per second over the last ${mins} minutes (errors in red)`,
    ),
  );
  const p50 = bs.map((x) => x.p50);
  const p95 = bs.map((x) => x.p95);
  $("lat-now").textContent =
    `${fmtMs(o.activity.total.p50)} / ${fmtMs(o.activity.total.p95)} over ${mins} min`;
  $("chart-latency").replaceChildren(
    sparkline(
      [
        { values: p95, kind: "line2" },
        { values: p50, kind: "line" },
      ],
      "enqueue to answer, p50 (blue) and p95 (orange) per 10 s",
    ),
  );
  const u50 = bs.map((x) => x.upstreamP50);
  const u95 = bs.map((x) => x.upstreamP95);
  $("up-now").textContent = `${fmtMs(lastDefined(u50))} / ${fmtMs(lastDefined(u95))} last`;
  $("chart-upstream").replaceChildren(
    sparkline(
      [
        { values: u95, kind: "line2" },
        { values: u50, kind: "line" },
      ],
      "upstream API time, p50 (blue) and p95 (orange) per 10 s",
    ),
  );

  const tenants = [...new Set(o.lanes.map((l) => l.tenant))];
  const rows = tenants.map((t) => {
    const tr = document.createElement("tr");
    tr.append(td(t));
    for (const p of PRIORITIES) {
      const l = o.lanes.find((x) => x.tenant === t && x.priority === p);
      const c = td(l ? String(l.pending) : "–");
      if (l) {
        c.dataset.tenant = t;
        c.dataset.priority = p;
        c.dataset.pending = String(l.pending);
        c.dataset.ackPending = String(l.ackPending);
        if (l.ackPending > 0) {
          const s = document.createElement("span");
          s.className = "muted";
          s.textContent = ` +${l.ackPending} unacked`;
          c.append(s);
        }
        if (!l.present) c.title = `consumer ${l.consumer} missing: run streams apply`;
      }
      tr.append(c);
    }
    return tr;
  });
  $("lanes")
    .querySelector("tbody")!
    .replaceChildren(...rows);
}

function renderDlq(items: readonly DeadLetterView[], next: number | undefined): void {
  const rows = items.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.dlqId = d.id;
    tr.append(
      td(d.id, "id"),
      td(d.priority === "normal" ? d.tenant : `${d.tenant} (${d.priority})`),
      td(String(d.code)),
      td(d.error, "err"),
      td(String(d.attempts)),
      td(d.failedAt ? new Date(d.failedAt).toLocaleString() : ""),
    );
    tr.cells[3]!.title = d.error;
    const actions = document.createElement("td");
    for (const [action, label] of [
      ["replay", "Replay"],
      ["delete", "Delete"],
    ] as const) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.action = action;
      b.textContent = label;
      actions.append(b, " ");
    }
    tr.append(actions);
    return tr;
  });
  $("dlq")
    .querySelector("tbody")!
    .replaceChildren(...rows);
  nextAfter = next;
  $("dlq-more").hidden = next === undefined;
  $<HTMLButtonElement>("replay-all").disabled = items.length === 0;
}

function showLogin(message: string): void {
  if (timer !== undefined) window.clearTimeout(timer);
  timer = undefined;
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("status").textContent = "token needed";
  $<HTMLInputElement>("token").focus();
}

function failed(e: unknown): void {
  if (e instanceof Unauthorized) {
    const had = savedToken() !== null;
    forgetToken();
    showLogin(had ? "that token was refused" : "");
    return;
  }
  const msg = e instanceof ApiError || e instanceof Error ? e.message : String(e);
  $("status").textContent = `not updated: ${msg}`;
  $("status").className = "bad";
}

/** One read and render; false when a replay or delete happened meanwhile (stale answer). */
async function readOnce(): Promise<boolean> {
  const seen = epoch;
  const [o, page] = await Promise.allSettled([
    call<Overview>("GET", "/api/overview"),
    call<DlqPageView>("GET", `/api/dlq?limit=${Math.min(500, loaded)}`),
  ]);
  if (o.status === "rejected") throw o.reason;
  if (seen !== epoch) return false;
  $("login").hidden = true;
  $("app").hidden = false;
  renderOverview(o.value);
  // The queues still show when the dead letters cannot be read (e.g. NATS permissions).
  if (page.status === "fulfilled") renderDlq(page.value.items, page.value.next);
  else if (page.reason instanceof Unauthorized) throw page.reason;
  else $("dlq-msg").textContent = `dead letters not read: ${(page.reason as Error).message}`;
  $("status").textContent = `updated ${new Date(o.value.time).toLocaleTimeString()}`;
  $("status").className = "muted";
  return true;
}

/** Reads and renders now (or right after the read in progress), then polls on. */
async function refresh(): Promise<void> {
  if (running) {
    again = true;
    return running;
  }
  running = (async () => {
    try {
      // Bounded: a read made stale by an action is repeated a few times at most.
      for (let i = 0; i < 5; i++) {
        again = false;
        const fresh = await readOnce();
        if (fresh && !again) break;
      }
    } catch (e) {
      failed(e);
      if (e instanceof Unauthorized) return;
    }
    schedule();
  })().finally(() => (running = undefined));
  return running;
}

function schedule(): void {
  if (timer !== undefined) window.clearTimeout(timer);
  timer = window.setTimeout(() => void refresh(), POLL_MS);
}

async function act(button: HTMLButtonElement, row: HTMLTableRowElement): Promise<void> {
  const id = row.dataset.dlqId!;
  const action = button.dataset.action;
  if (action === "delete" && !window.confirm(`Delete the dead letter ${id}? It cannot be undone.`))
    return;
  for (const b of row.querySelectorAll("button")) b.disabled = true;
  epoch++;
  try {
    const path = `/api/dlq/${encodeURIComponent(id)}`;
    if (action === "replay") await call("POST", `${path}/replay`);
    else await call("DELETE", path);
    epoch++;
    row.remove();
    $("dlq-msg").textContent = `${action === "replay" ? "replayed" : "deleted"} ${id}`;
  } catch (e) {
    for (const b of row.querySelectorAll("button")) b.disabled = false;
    failed(e);
    $("dlq-msg").textContent = `${action} ${id} failed: ${(e as Error).message}`;
  }
  await refresh();
}

function start(): void {
  $("dlq")
    .querySelector("tbody")!
    .addEventListener("click", (ev) => {
      const b = (ev.target as Element).closest("button");
      const row = b?.closest("tr");
      if (b && row) void act(b, row);
    });
  $("replay-all").addEventListener("click", () => {
    if (!window.confirm("Replay every dead letter?")) return;
    epoch++;
    void call<{ replayed: string[]; failed: unknown[] }>("POST", "/api/dlq/replay")
      .then((r) => {
        $("dlq-msg").textContent =
          `replayed ${r.replayed.length}${r.failed.length ? `, ${r.failed.length} failed` : ""}`;
      })
      .catch(failed)
      .then(() => {
        epoch++;
        return refresh();
      });
  });
  $("dlq-more").addEventListener("click", () => {
    if (nextAfter === undefined) return;
    loaded += PAGE;
    void refresh();
  });
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $<HTMLInputElement>("token").value.trim();
    if (!t) return;
    saveToken(t);
    $<HTMLInputElement>("token").value = "";
    void refresh();
  });
  void refresh();
}

start();
