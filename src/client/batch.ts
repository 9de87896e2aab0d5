/**
 * Batch files in the OpenAI Batch API formats. Input: one `{custom_id, method, url,
 * body}` per line. Output: one `{id, custom_id, response: {status_code, request_id,
 * body}, error}` per request, in input order. Both stream: memory stays bounded
 * whatever the file size (a window of outstanding PubAcks or lookups).
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { createReadStream, createWriteStream } from "node:fs";
import { once } from "node:events";
import { StringDecoder } from "node:string_decoder";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Priority } from "../protocol/lanes.js";
import { Code, RequestError } from "../protocol/codes.js";
import { H, JSON_TYPE } from "../protocol/headers.js";
import { validateParams } from "../protocol/request.js";
import { newId, subjectFor } from "../protocol/subjects.js";
import { ClientError, type ProxyClient } from "./client.js";

export interface InvalidLine {
  line: number;
  custom_id: string | null;
  error: string;
  /** how many valid requests come before it (places it in the output order) */
  after: number;
}

export interface BatchManifest {
  batch_id: string;
  /** valid requests, ids `<batch_id>-1` … `<batch_id>-<requests>` */
  requests: number;
  invalid: InvalidLine[];
  invalid_truncated: boolean;
  created_at: string;
  source: string;
}

export interface BatchProgress {
  start(total: number, label: string): void;
  tick(n?: number): void;
  stop(): void;
}

export const NO_PROGRESS: BatchProgress = { start() {}, tick() {}, stop() {} };

/** Request id of the n-th (1-based) valid request of a batch. */
export function batchRequestId(batchId: string, n: number): string {
  return `${batchId}-${n}`;
}

interface ParsedLine {
  custom_id: string;
  body: Record<string, unknown>;
}

const MAX_INVALID_KEPT = 5000;

/**
 * Parses one input line. Throws RequestError naming what is wrong.
 */
export function parseBatchLine(text: string): ParsedLine {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new RequestError(Code.badRequest, `invalid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj))
    throw new RequestError(
      Code.badRequest,
      "a line must be a JSON object {custom_id, method, url, body}",
    );
  const o = obj as Record<string, unknown>;
  if (typeof o.custom_id !== "string" || o.custom_id === "")
    throw new RequestError(Code.badRequest, '"custom_id" must be a non-empty string');
  if (o.method !== undefined && o.method !== "POST")
    throw new RequestError(
      Code.badRequest,
      `"method" must be "POST", got ${JSON.stringify(o.method)}`,
    );
  if (o.url !== undefined && o.url !== "/v1/chat/completions") {
    throw new RequestError(
      Code.badRequest,
      `"url" ${JSON.stringify(o.url)} is not supported: only /v1/chat/completions`,
    );
  }
  validateParams({ model: "-", ...(o.body as object) }, "-");
  return { custom_id: o.custom_id, body: o.body as Record<string, unknown> };
}

function customIdOf(text: string): string | null {
  try {
    const o = JSON.parse(text) as { custom_id?: unknown };
    return typeof o.custom_id === "string" ? o.custom_id : null;
  } catch {
    return null;
  }
}

/**
 * The non-empty lines of a file, numbered from 1 (CRLF or LF), from the read stream's own
 * async iterator. (readline's is not used: in one hung run of the batch test the CLI had
 * read the last line and never reported the batch; the cause was not isolated.)
 */
async function* lines(file: string): AsyncGenerator<{ n: number; text: string }> {
  const dec = new StringDecoder("utf8");
  let n = 0;
  let rest = "";
  const line = (raw: string) => {
    n++;
    const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    return text.trim() !== "" ? { n, text } : undefined;
  };
  for await (const chunk of createReadStream(file)) {
    const buf = rest + dec.write(chunk as Buffer);
    let start = 0;
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n", start)) {
      const l = line(buf.slice(start, i));
      start = i + 1;
      if (l) yield l;
    }
    rest = buf.slice(start);
  }
  rest += dec.end();
  if (rest !== "") {
    const l = line(rest);
    if (l) yield l;
  }
}

export interface SubmitBatchOptions {
  batchId?: string;
  /** refuse the whole file if any line is invalid (nothing is submitted) */
  strict?: boolean;
  /** outstanding PubAcks (default 256) */
  window?: number;
  progress?: BatchProgress;
  /** called for each invalid line */
  onInvalid?: (l: InvalidLine) => void;
  /** default `low`: a batch never delays people waiting at a prompt */
  priority?: Priority;
  tenant?: string;
  /** every line answered from the response cache, and cached, for this long (Proxy-Cache) */
  cache?: string;
}

/**
 * Submits every valid line of a batch file and stores its manifest.
 * @throws ClientError when the file cannot be read, or under `strict` when a line is invalid
 */
export async function submitBatch(
  client: ProxyClient,
  file: string,
  o: SubmitBatchOptions = {},
): Promise<BatchManifest> {
  const batchId = o.batchId ?? `batch_${newId()}`;
  const progress = o.progress ?? NO_PROGRESS;
  const invalid: InvalidLine[] = [];
  let total = 0;
  try {
    for await (const _ of lines(file)) total++;
  } catch (e) {
    throw new ClientError(
      Code.badRequest,
      `cannot read ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message}`,
    );
  }
  if (o.strict) {
    const problems: string[] = [];
    for await (const { n, text } of lines(file)) {
      try {
        parseBatchLine(text);
      } catch (e) {
        problems.push(`line ${n}: ${(e as Error).message}`);
      }
    }
    if (problems.length > 0) {
      throw new ClientError(
        Code.badRequest,
        `${file}: ${problems.length} invalid line(s), nothing submitted (--strict):\n  ${problems.slice(0, 20).join("\n  ")}${problems.length > 20 ? "\n  …" : ""}`,
      );
    }
  }
  const window = o.window ?? 256;
  const inflight = new Set<Promise<void>>();
  let firstError: unknown;
  let requests = 0;
  progress.start(total, "submitting");
  for await (const { n, text } of lines(file)) {
    let parsed: ParsedLine;
    try {
      parsed = parseBatchLine(text);
    } catch (e) {
      const l: InvalidLine = {
        line: n,
        custom_id: customIdOf(text),
        error: (e as Error).message,
        after: requests,
      };
      if (invalid.length < MAX_INVALID_KEPT) invalid.push(l);
      o.onInvalid?.(l);
      progress.tick();
      continue;
    }
    requests++;
    const id = batchRequestId(batchId, requests);
    const p = client
      .submitRaw(new TextEncoder().encode(JSON.stringify(parsed.body)), JSON_TYPE, {
        id,
        priority: o.priority ?? "low",
        ...(o.tenant ? { tenant: o.tenant } : {}),
        ...(o.cache !== undefined ? { cache: o.cache } : {}),
        headers: { [H.batchId]: batchId, [H.customId]: parsed.custom_id.replace(/[\r\n]+/g, " ") },
      })
      .then(
        () => progress.tick(),
        (e: unknown) => {
          firstError ??= e;
        },
      )
      .finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= window) await Promise.race(inflight);
    if (firstError) break;
  }
  await Promise.all(inflight);
  progress.stop();
  if (firstError instanceof Error) throw firstError;
  if (firstError !== undefined) throw new Error("batch submission failed");
  const manifest: BatchManifest = {
    batch_id: batchId,
    requests,
    invalid,
    invalid_truncated: invalid.length >= MAX_INVALID_KEPT,
    created_at: new Date().toISOString(),
    source: file,
  };
  await storeManifest(client, manifest);
  return manifest;
}

async function storeManifest(client: ProxyClient, m: BatchManifest): Promise<void> {
  const h = natsHeaders();
  h.set(H.contentType, JSON_TYPE);
  const subject = subjectFor(client.names.batchesPrefix, m.batch_id);
  await jetstream(client.nc).publish(subject, new TextEncoder().encode(JSON.stringify(m)), {
    headers: h,
  });
}

/** The stored manifest of a batch, or null. */
export async function readManifest(
  client: ProxyClient,
  batchId: string,
): Promise<BatchManifest | null> {
  const jsm = await jetstreamManager(client.nc);
  const sm = await jsm.streams.getMessage(client.names.batchesStream, {
    last_by_subj: subjectFor(client.names.batchesPrefix, batchId),
  });
  return sm ? sm.json<BatchManifest>() : null;
}

export interface BatchOutputOptions {
  /** wait for results still missing (default: write what exists, missing ones as errors) */
  wait?: boolean;
  /** give up waiting for one result after this long */
  timeoutMs?: number;
  /** concurrent lookups (default 64) */
  window?: number;
  progress?: BatchProgress;
}

export interface BatchCounts {
  completed: number;
  failed: number;
  invalid: number;
  missing: number;
}

/**
 * Writes the Batch API output file for a batch, in input order.
 */
export async function writeBatchOutput(
  client: ProxyClient,
  manifest: BatchManifest,
  out: string,
  o: BatchOutputOptions = {},
): Promise<BatchCounts> {
  const counts: BatchCounts = { completed: 0, failed: 0, invalid: 0, missing: 0 };
  const ws = createWriteStream(out, { encoding: "utf8" });
  const write = async (obj: unknown) => {
    if (!ws.write(`${JSON.stringify(obj)}\n`)) await once(ws, "drain");
  };
  const progress = o.progress ?? NO_PROGRESS;
  const window = o.window ?? 64;
  let nextInvalid = 0;
  const writeInvalidUpTo = async (after: number) => {
    while (nextInvalid < manifest.invalid.length && manifest.invalid[nextInvalid]!.after <= after) {
      const l = manifest.invalid[nextInvalid++]!;
      counts.invalid++;
      await write({
        id: `${manifest.batch_id}-line-${l.line}`,
        custom_id: l.custom_id,
        response: null,
        error: { code: "invalid_request", message: `line ${l.line}: ${l.error}` },
      });
    }
  };
  progress.start(manifest.requests, o.wait ? "waiting for results" : "reading results");
  const pending: Promise<Awaited<ReturnType<ProxyClient["result"]>>>[] = [];
  const lookup = (n: number) =>
    client.result(batchRequestId(manifest.batch_id, n), {
      wait: o.wait ?? false,
      ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    });
  let issued = 0;
  try {
    for (let n = 1; n <= manifest.requests; n++) {
      while (issued < manifest.requests && issued < n - 1 + window) pending.push(lookup(++issued));
      const r = await pending.shift()!;
      await writeInvalidUpTo(n - 1);
      const id = batchRequestId(manifest.batch_id, n);
      if (!r) {
        counts.missing++;
        await write({
          id,
          custom_id: null,
          response: null,
          error: { code: "missing", message: `no result for ${id} (still queued?)` },
        });
      } else if (r.ok) {
        counts.completed++;
        await write({
          id,
          custom_id: r.customId ?? null,
          response: {
            status_code: 200,
            request_id: r.upstreamRequestId ?? id,
            body: r.completion ?? r.body,
          },
          error: null,
        });
      } else {
        counts.failed++;
        await write({
          id,
          custom_id: r.customId ?? null,
          response: {
            status_code: r.code ?? 500,
            request_id: r.upstreamRequestId ?? id,
            body: { error: { message: r.error ?? "", code: r.code ?? 500 } },
          },
          error: null,
        });
      }
      progress.tick();
    }
    await writeInvalidUpTo(Number.MAX_SAFE_INTEGER);
  } finally {
    progress.stop();
    ws.end();
    await once(ws, "finish");
  }
  return counts;
}
