/**
 * Stream and consumer definitions (`streams/*.json`, JetStream API JSON format) and
 * their idempotent application: create what is missing, update what drifted, and
 * refuse destructive changes (retention, storage, ack policy) without `force`.
 */
import { apiDescription, apiErrCode, isMissing } from "./errors.js";
import { isLaneConsumerName } from "../protocol/lanes.js";
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

export type Action = "created" | "updated" | "unchanged" | "recreated" | "removed" | "outdated";

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
    if (k === "metadata" && v && typeof v === "object") {
      // The server adds metadata of its own (_nats.*): only the keys we set count.
      const hm = (h[k] ?? {}) as Record<string, unknown>;
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>))
        if (hm[mk] !== mv)
          out.push(`metadata.${mk}: ${JSON.stringify(hm[mk])} → ${JSON.stringify(mv)}`);
      continue;
    }
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
  opts: {
    force?: boolean;
    /** create what is missing and add missing subjects; never change or remove anything else (serve) */
    createOnly?: boolean;
    /** remove lane consumers of this stream that the definitions no longer have (streams apply) */
    prune?: { stream: string; consumerBase: string };
  } = {},
): Promise<ApplyReport[]> {
  const reports: ApplyReport[] = [];
  const stale = opts.prune ? await staleConsumers(jsm, defs, opts.prune, opts.force ?? false) : [];
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
    if (opts.createOnly) {
      // New tenants must be served without a manual step: add their subjects.
      const missing = (s.subjects ?? []).filter((x) => !have.subjects.includes(x));
      const metadata = changes.filter((c) => c.startsWith("metadata."));
      if (missing.length > 0 || metadata.length > 0) {
        const what = [
          ...(missing.length ? [`subjects: added ${missing.join(", ")}`] : []),
          ...metadata,
        ];
        try {
          await jsm.streams.update(s.name, {
            ...have,
            subjects: [...have.subjects, ...missing],
            metadata: { ...have.metadata, ...s.metadata },
          });
          reports.push({ kind: "stream", name: s.name, action: "updated", changes: what });
        } catch (e) {
          // Least privilege: serve may not update streams; the operator's apply will.
          const why = e instanceof Error ? e.message : String(e);
          reports.push({
            kind: "stream",
            name: s.name,
            action: "outdated",
            changes: [...what, `not applied: ${why}`],
          });
        }
      } else reports.push({ kind: "stream", name: s.name, action: "unchanged", changes });
      continue;
    }
    if (changes.length === 0) {
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
  for (const c of stale) {
    await jsm.consumers.delete(c.stream, c.name);
    // Forced removal of a tenant's lane: its queued requests would sit unserved.
    for (const f of c.purge) await jsm.streams.purge(c.stream, { filter: f });
    reports.push({
      kind: "consumer",
      name: `${c.stream}/${c.name}`,
      action: "removed",
      changes: c.why,
    });
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
      try {
        await jsm.consumers.add(c.stream_name, c.config);
      } catch (e) {
        if (apiErrCode(e) === 10100 || apiErrCode(e) === 10099)
          throw new StreamsError(
            `consumer ${c.stream_name}/${name}: an older consumer on ${c.stream_name} overlaps the lanes (${apiDescription(e) ?? ""}); run "nats-openai-proxy streams apply" once to replace it with the lane consumers`,
          );
        throw e;
      }
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

interface StaleConsumer {
  stream: string;
  name: string;
  why: string[];
  /** subjects to purge after removal (forced removal of a lane with queued requests) */
  purge: string[];
}

/**
 * Lane consumers on the request stream that the definitions no longer have: the
 * single consumer of earlier versions (its requests are served by the lanes) and the
 * lanes of removed tenants, which are refused while they hold queued requests unless
 * forced.
 */
async function staleConsumers(
  jsm: JetStreamManager,
  defs: Definitions,
  p: { stream: string; consumerBase: string },
  force: boolean,
): Promise<StaleConsumer[]> {
  const wanted = new Set(
    defs.consumers.filter((c) => c.stream_name === p.stream).map((c) => c.config.durable_name),
  );
  let page: Awaited<ReturnType<ReturnType<JetStreamManager["consumers"]["list"]>["next"]>>;
  try {
    page = await jsm.consumers.list(p.stream).next();
  } catch (e) {
    if (isMissing(e)) return [];
    throw e;
  }
  const out: StaleConsumer[] = [];
  for (const ci of page) {
    if (wanted.has(ci.name) || !isLaneConsumerName(ci.name, p.consumerBase)) continue;
    if (ci.name === p.consumerBase) {
      out.push({
        stream: p.stream,
        name: ci.name,
        why: ["replaced by the lane consumers"],
        purge: [],
      });
      continue;
    }
    const queued = ci.num_pending + ci.num_ack_pending;
    if (queued > 0 && !force) {
      throw new StreamsError(
        `consumer ${p.stream}/${ci.name} serves a lane that is no longer configured and still holds ${queued} queued request(s): put the tenant back until they are served, or re-run with --force to remove the lane and delete them`,
      );
    }
    const filters =
      ci.config.filter_subjects ?? (ci.config.filter_subject ? [ci.config.filter_subject] : []);
    out.push({
      stream: p.stream,
      name: ci.name,
      why: [
        queued > 0
          ? `lane no longer configured; ${queued} queued request(s) deleted`
          : "lane no longer configured",
      ],
      purge: queued > 0 ? filters : [],
    });
  }
  return out;
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
