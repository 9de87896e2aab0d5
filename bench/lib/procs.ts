/**
 * Child processes for the benchmark and what /proc says about them: CPU time
 * (utime + stime of every thread, in clock ticks) and peak RSS (VmHWM). Every worker under
 * test runs in its own process, so its figures never include the load generator, the broker
 * or the OpenAI-compatible test double.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Clock ticks per second of /proc/<pid>/stat times (100 on Linux, asked once). */
export const CLK_TCK = ((): number => {
  try {
    const n = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system, all threads) used so far by `pid`; 0 once it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces; everything after its ")" is space-separated.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state), so utime (field 14) is rest[11] and stime (15) is rest[12].
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** A `Vm*:` line of /proc/<pid>/status in bytes (VmHWM = peak RSS, VmRSS = current RSS). */
export function vmBytes(pid: number | undefined, field: "VmHWM" | "VmRSS"): number {
  if (pid === undefined) return 0;
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number | undefined;
  /** the last ~20 kB the process printed (stdout + stderr) */
  output(): string;
  /** resolves with the first stdout line matching `re` */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string>;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let hooked = false;

/** A temporary directory removed when the benchmark exits, however it exits. */
export function registerTempDir(dir: string): void {
  hookExit();
  tempDirs.add(dir);
}

/** Removes a registered temporary directory now. */
export function removeTempDir(dir: string): void {
  tempDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Children still alive when the benchmark exits (error, Ctrl-C, kill) are SIGKILLed. */
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  const killAll = (): void => {
    for (const p of live) p.kill("SIGKILL");
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  };
  process.on("exit", killAll);
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const sig of Object.keys(codes) as (keyof typeof codes)[]) {
    process.on(sig, () => {
      killAll();
      process.exit(codes[sig]);
    });
  }
}

/** Spawns `command args` with only the given environment (plus PATH and HOME). */
export function spawnChild(
  name: string,
  command: string,
  args: string[],
  env: Record<string, string>,
): Child {
  hookExit();
  const proc = spawn(command, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(proc);
  let out = "";
  let stdoutBuf = "";
  const lineWaiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  const keep = (s: string): void => {
    out += s;
    if (out.length > 40_000) out = out.slice(-20_000);
  };
  proc.stdout.on("data", (b: Buffer) => {
    const s = b.toString();
    keep(s);
    stdoutBuf += s;
    let nl: number;
    while ((nl = stdoutBuf.indexOf("\n")) >= 0) {
      const line = stdoutBuf.slice(0, nl);
      stdoutBuf = stdoutBuf.slice(nl + 1);
      for (const w of [...lineWaiters]) {
        if (w.re.test(line)) {
          lineWaiters.splice(lineWaiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  proc.stderr.on("data", (b: Buffer) => keep(b.toString()));
  const exited = new Promise<number | null>((resolve) => {
    proc.once("exit", (code) => {
      live.delete(proc);
      resolve(code);
    });
    proc.once("error", (e) => {
      keep(`spawn error: ${e.message}\n`);
      live.delete(proc);
      resolve(null);
    });
  });
  const gone = (): boolean => proc.exitCode !== null || proc.signalCode !== null;
  return {
    name,
    proc,
    pid: proc.pid,
    output: () => out,
    exited,
    waitForLine(re, timeoutMs) {
      return new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => {
          reject(
            new Error(
              `${name}: no line matching ${String(re)} within ${timeoutMs} ms:\n${out.slice(-2000)}`,
            ),
          );
        }, timeoutMs);
        lineWaiters.push({
          re,
          resolve: (line) => {
            clearTimeout(t);
            resolve(line);
          },
        });
        void exited.then(() => {
          clearTimeout(t);
          reject(new Error(`${name} exited:\n${out.slice(-2000)}`));
        });
      });
    },
    async stop(graceMs = 5000) {
      if (gone()) return;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}

/** `node [nodeArgs] --import tsx <script> [args]`, the way every TypeScript child runs. */
export function spawnTs(
  name: string,
  script: string,
  args: string[],
  env: Record<string, string>,
  nodeArgs: string[] = [],
): Child {
  return spawnChild(name, process.execPath, [...nodeArgs, "--import", "tsx", script, ...args], env);
}

/** CPU seconds the whole machine has been busy (all CPUs; /proc/stat, idle and iowait left out). */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / CLK_TCK;
  } catch {
    return 0;
  }
}

/** CPU seconds of this process (all threads). */
function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * How many cores processes other than ours kept busy over an interval: machine busy time
 * minus the CPU of the given processes and of this one, divided by the wall time. Other
 * work on the machine (tests, builds) shows up here and makes figures incomparable.
 */
export class LoadMeter {
  private t0 = 0;
  private busy0 = 0;
  private ours0 = 0;

  constructor(private readonly pids: () => (number | undefined)[]) {}

  private ours(): number {
    return this.pids().reduce((s: number, p) => s + cpuSeconds(p), 0) + selfCpuSeconds();
  }

  start(): void {
    this.t0 = performance.now();
    this.busy0 = machineBusySeconds();
    this.ours0 = this.ours();
  }

  /** cores used by other processes since start() */
  foreignCores(): number {
    const wall = (performance.now() - this.t0) / 1000;
    if (wall <= 0) return 0;
    const foreign = machineBusySeconds() - this.busy0 - (this.ours() - this.ours0);
    return Math.max(0, foreign / wall);
  }
}

/**
 * Waits (at most `maxMs`) until other processes use less than `cores` cores over a second,
 * twice in a row. Returns the last reading.
 */
export async function waitQuiet(
  pids: () => (number | undefined)[],
  cores: number,
  maxMs: number,
): Promise<number> {
  const deadline = Date.now() + maxMs;
  let quiet = 0;
  let last = 0;
  while (Date.now() < deadline) {
    const m = new LoadMeter(pids);
    m.start();
    await new Promise((r) => setTimeout(r, 1000));
    last = m.foreignCores();
    quiet = last < cores ? quiet + 1 : 0;
    if (quiet >= 2) break;
  }
  return last;
}

/**
 * A short hash of the proxy's code and shipped configuration (src/**, config/config.yaml,
 * streams/*.json), taken when a proxy process starts, so a report can tell when the code
 * changed while the benchmark ran.
 */
export function codeFingerprint(): string {
  const h = createHash("sha256");
  const walk = (dir: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(join(ROOT, dir)).sort();
    } catch {
      return;
    }
    for (const name of entries) {
      const rel = `${dir}/${name}`;
      if (statSync(join(ROOT, rel)).isDirectory()) walk(rel);
      else
        h.update(rel)
          .update("\0")
          .update(readFileSync(join(ROOT, rel)))
          .update("\0");
    }
  };
  walk("src");
  walk("streams");
  walk("config");
  return h.digest("hex").slice(0, 12);
}
