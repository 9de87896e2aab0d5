/**
 * Stream and consumer definitions (`streams/*.json`, JetStream API JSON format) and
 * their idempotent application: create what is missing, update what drifted, and
 * refuse destructive changes (retention, storage, ack policy) without `force`.
 */
import { isMissing } from "./errors.js";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";

export interface ConsumerDef {
  stream_name: string;
  config: Partial<ConsumerConfig> & { durable_name: string };
}

export interface Definitions {
  streams: (Partial<StreamConfig> & { name: string })[];
  consumers: ConsumerDef[];
}

export class StreamsError extends Error {
  override readonly name = "StreamsError";
}

/**
 * Reads every `*.json` in `dir`: an object with `name` is a stream, one with
 * `stream_name` and `config` a consumer.
 * @param replicas overrides `num_replicas` of every stream (clusters)
 */
export function loadDefinitions(dir: string, replicas?: number): Definitions {
  let files: string[];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .sort();
  } catch {
    throw new StreamsError(`streams directory ${dir} not found (set --dir or streams.dir)`);
  }
  const defs: Definitions = { streams: [], consumers: [] };
  for (const f of files) {
    const path = join(dir, f);
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    } catch (e) {
      throw new StreamsError(`${path}: invalid JSON: ${(e as Error).message}`);
    }
    if (typeof obj.stream_name === "string" && typeof obj.config === "object" && obj.config) {
      const config = obj.config as ConsumerDef["config"];
      if (typeof config.durable_name !== "string") {
        throw new StreamsError(`${path}: config.durable_name is required`);
      }
      defs.consumers.push({ stream_name: obj.stream_name, config });
    } else if (typeof obj.name === "string") {
      const s = obj as Partial<StreamConfig> & { name: string };
      if (replicas !== undefined) s.num_replicas = replicas;
      defs.streams.push(s);
    } else {
      throw new StreamsError(
        `${path}: neither a stream (needs "name") nor a consumer (needs "stream_name" and "config")`,
      );
    }
  }
  return defs;
}

export type Action = "created" | "updated" | "unchanged" | "recreated";

export interface ApplyReport {
  kind: "stream" | "consumer";
  name: string;
  action: Action;
  changes: string[];
}

const DESTRUCTIVE_STREAM = ["retention", "storage"];
const DESTRUCTIVE_CONSUMER = ["ack_policy", "deliver_policy", "durable_name"];

/** Keys of `want` whose value differs from `have` (fields the file does not set are ignored). */
export function diff(want: object, have: object): string[] {
  const out: string[] = [];
  const h = have as Record<string, unknown>;
  for (const [k, v] of Object.entries(want)) {
    if (k === "name" || k === "stream_name") continue;
    if (JSON.stringify(normalise(v)) !== JSON.stringify(normalise(h[k]))) {
      out.push(`${k}: ${JSON.stringify(h[k])} → ${JSON.stringify(v)}`);
    }
  }
  return out;
}

function normalise(v: unknown): unknown {
  if (v === undefined || v === null || v === "") return null;
  return v;
}

/**
 * Creates or updates every definition. Idempotent: a second run reports
 * `unchanged` for all.
 * @throws StreamsError on a destructive change without `force`
 */
export async function applyDefinitions(
  jsm: JetStreamManager,
  defs: Definitions,
  opts: { force?: boolean; createOnly?: boolean } = {},
): Promise<ApplyReport[]> {
  const reports: ApplyReport[] = [];
  for (const s of defs.streams) {
    let have: StreamConfig | undefined;
    try {
      have = (await jsm.streams.info(s.name)).config;
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
    if (!have) {
      await addStreamWithRetry(jsm, s);
      reports.push({ kind: "stream", name: s.name, action: "created", changes: [] });
      continue;
    }
    const changes = diff(s, have);
    if (changes.length === 0 || opts.createOnly) {
      reports.push({ kind: "stream", name: s.name, action: "unchanged", changes });
      continue;
    }
    const destructive = DESTRUCTIVE_STREAM.filter((k) =>
      changes.some((c) => c.startsWith(`${k}:`)),
    );
    if (destructive.length > 0) {
      if (!opts.force) {
        throw new StreamsError(
          `stream ${s.name}: changing ${destructive.join(", ")} needs the stream to be deleted and recreated, losing its messages; re-run with --force to do that (${changes.join("; ")})`,
        );
      }
      await jsm.streams.delete(s.name);
      await addStreamWithRetry(jsm, s);
      reports.push({ kind: "stream", name: s.name, action: "recreated", changes });
      continue;
    }
    await jsm.streams.update(s.name, { ...have, ...s });
    reports.push({ kind: "stream", name: s.name, action: "updated", changes });
  }
  for (const c of defs.consumers) {
    const name = c.config.durable_name;
    let have: ConsumerConfig | undefined;
    try {
      have = (await jsm.consumers.info(c.stream_name, name)).config;
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
    if (!have) {
      await jsm.consumers.add(c.stream_name, c.config);
      reports.push({
        kind: "consumer",
        name: `${c.stream_name}/${name}`,
        action: "created",
        changes: [],
      });
      continue;
    }
    const changes = diff(c.config, have);
    if (changes.length === 0 || opts.createOnly) {
      reports.push({
        kind: "consumer",
        name: `${c.stream_name}/${name}`,
        action: "unchanged",
        changes,
      });
      continue;
    }
    const destructive = DESTRUCTIVE_CONSUMER.filter((k) =>
      changes.some((x) => x.startsWith(`${k}:`)),
    );
    if (destructive.length > 0) {
      if (!opts.force) {
        throw new StreamsError(
          `consumer ${c.stream_name}/${name}: changing ${destructive.join(", ")} needs the consumer to be deleted and recreated (its pending and redelivery state is lost); re-run with --force`,
        );
      }
      await jsm.consumers.delete(c.stream_name, name);
      await jsm.consumers.add(c.stream_name, c.config);
      reports.push({
        kind: "consumer",
        name: `${c.stream_name}/${name}`,
        action: "recreated",
        changes,
      });
      continue;
    }
    await jsm.consumers.update(c.stream_name, name, c.config);
    reports.push({
      kind: "consumer",
      name: `${c.stream_name}/${name}`,
      action: "updated",
      changes,
    });
  }
  return reports;
}

// Right after a cluster starts, placement fails for a second or so ("no suitable peers").
async function addStreamWithRetry(
  jsm: JetStreamManager,
  s: Partial<StreamConfig> & { name: string },
) {
  const deadline = Date.now() + 15_000;
  for (let wait = 200; ; wait = Math.min(wait * 2, 2000)) {
    try {
      await jsm.streams.add(s);
      return;
    } catch (e) {
      const msg = (e as Error).message;
      if (!/no suitable peers|insufficient resources|timeout/i.test(msg) || Date.now() > deadline) {
        throw e;
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** One human line per report. */
export function formatReport(r: ApplyReport): string {
  const what = `${r.kind} ${r.name}: ${r.action}`;
  return r.changes.length > 0 && r.action !== "unchanged"
    ? `${what} (${r.changes.join("; ")})`
    : what;
}
