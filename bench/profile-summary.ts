/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function, self time per
 * area (a package in node_modules, a project file, Node internals, GC), and inclusive time of
 * the project's own functions.
 *
 *   node --import tsx bench/profile-summary.ts /tmp/prof/CPU.*.cpuprofile [--top 25] [--skip-ms 3000]
 *
 * --skip-ms leaves out the first milliseconds of the profile (process start-up, module loading).
 */
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Row {
  name: string;
  ms: number;
  /** share of the busy (non-idle) time */
  pct: number;
}

export interface Summary {
  file: string;
  totalMs: number;
  busyMs: number;
  selfByFunction: Row[];
  selfByArea: Row[];
  inclusiveProject: Row[];
}

const ROOT = fileURLToPath(new URL("..", import.meta.url));

function shortUrl(url: string): string {
  if (url === "") return "";
  const path = url.startsWith("file://") ? fileURLToPath(url) : url;
  const nm = path.lastIndexOf("node_modules/");
  if (nm >= 0) return path.slice(nm + "node_modules/".length);
  return path.startsWith("/") ? relative(ROOT, path) : path;
}

/** Which part of the program a frame belongs to. */
export function area(f: CallFrame): string {
  const name = f.functionName;
  if (f.url === "") {
    if (name === "(garbage collector)" || name === "(program)" || name === "(idle)") return name;
    return "(native / V8 builtins)";
  }
  if (f.url.startsWith("node:internal/deps/")) {
    return `node:internal/deps/${f.url.slice(19).split("/")[0] ?? ""}`;
  }
  if (f.url.startsWith("node:internal/")) {
    return `node:internal/${f.url.slice(14).split("/")[0]?.replace(/\.js$/, "") ?? ""}`;
  }
  if (f.url.startsWith("node:")) return f.url;
  const path = f.url.startsWith("file://") ? fileURLToPath(f.url) : f.url;
  const nm = path.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const parts = path.slice(nm + "node_modules/".length).split("/");
    const pkg = parts[0]?.startsWith("@") ? `${parts[0]}/${parts[1] ?? ""}` : (parts[0] ?? "");
    return `pkg ${pkg}`;
  }
  return relative(ROOT, path);
}

function label(f: CallFrame): string {
  const where = shortUrl(f.url);
  const fn = f.functionName || "(anonymous)";
  return where ? `${fn} ${where}:${f.lineNumber + 1}` : fn;
}

function top(map: Map<string, number>, n: number, busyMs: number): Row[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({
      name,
      ms: us / 1000,
      pct: busyMs > 0 ? (us / 1000 / busyMs) * 100 : 0,
    }));
}

/**
 * Reads and summarises one profile. With `window` (CLOCK_MONOTONIC µs, the clock of V8's
 * profile timestamps and of process.hrtime), only samples inside it count.
 */
export function summarise(
  file: string,
  n = 25,
  window?: { fromUs: number; toUs: number } | { skipMs: number },
): Summary {
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of p.nodes) {
    byId.set(node.id, node);
    for (const c of node.children ?? []) parent.set(c, node.id);
  }
  const selfFn = new Map<string, number>();
  const selfArea = new Map<string, number>();
  const incl = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let ts = p.startTime;
  const from = !window ? -Infinity : "skipMs" in window ? ts + window.skipMs * 1000 : window.fromUs;
  const to = window && "toUs" in window ? window.toUs : Infinity;
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] ?? 0;
    ts += p.timeDeltas[i] ?? 0;
    if (ts < from || ts > to) continue;
    // timeDeltas[i] is the time before sample i; attribute the following delta to sample i.
    const dt = p.timeDeltas[i + 1] ?? 0;
    const node = byId.get(id);
    if (!node) continue;
    total += dt;
    const f = node.callFrame;
    if (f.functionName === "(idle)") {
      idle += dt;
      continue;
    }
    const l = label(f);
    selfFn.set(l, (selfFn.get(l) ?? 0) + dt);
    const a = area(f);
    selfArea.set(a, (selfArea.get(a) ?? 0) + dt);
    // Inclusive time of the project's own functions (each counted once per stack).
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)?.callFrame;
      if (!cf || cf.url.includes("node_modules") || !cf.url.startsWith("file://")) continue;
      const key = label(cf);
      if (seen.has(key)) continue;
      seen.add(key);
      incl.set(key, (incl.get(key) ?? 0) + dt);
    }
  }
  const busyMs = (total - idle) / 1000;
  return {
    file,
    totalMs: total / 1000,
    busyMs,
    selfByFunction: top(selfFn, n, busyMs),
    selfByArea: top(selfArea, n, busyMs),
    inclusiveProject: top(incl, n, busyMs),
  };
}

/** The summary as markdown tables. */
export function formatSummary(s: Summary, title = s.file): string {
  const table = (head: string, rows: Row[]) =>
    [
      `| ${head} | ms | % of busy |`,
      "|---|---:|---:|",
      ...rows.map(
        (r) => `| ${r.name.replace(/\|/g, "\\|")} | ${r.ms.toFixed(0)} | ${r.pct.toFixed(1)} |`,
      ),
    ].join("\n");
  return [
    `#### ${title}`,
    "",
    `busy ${s.busyMs.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms sampled`,
    "",
    table("self time by area", s.selfByArea),
    "",
    table("self time by function", s.selfByFunction),
    "",
    table("inclusive time, project functions", s.inclusiveProject),
    "",
  ].join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: "string", default: "25" },
      "skip-ms": { type: "string", default: "0" },
    },
  });
  if (positionals.length === 0) {
    process.stderr.write("usage: profile-summary <file.cpuprofile>... [--top N] [--skip-ms MS]\n");
    process.exit(2);
  }
  const skipMs = Number(values["skip-ms"]);
  for (const f of positionals) {
    process.stdout.write(formatSummary(summarise(f, Number(values.top), { skipMs })) + "\n");
  }
}
