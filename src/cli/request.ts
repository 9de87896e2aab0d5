/**
 * `request`: like `nats request openai_requests "..."`, but durable: the request goes
 * into the work queue with an inbox as Reply-To, and the reply is printed.
 */
import { Command } from "commander";
import type { ResultView } from "../protocol/result.js";
import {
  action,
  addCommonOptions,
  CliError,
  laneOptions,
  withClient,
  type CommonFlags,
} from "./common.js";
import { readInput } from "./input.js";
import { printStream } from "./stream-print.js";
import { parseCacheTtl } from "../protocol/cache.js";

interface RequestFlags extends CommonFlags {
  json?: string;
  timeout: string;
  stream?: boolean;
  id?: string;
  priority?: string;
  tenant?: string;
  resume?: string;
  after?: string;
  cache?: string;
}

/** `--cache <ttl>` checked here (usage error) rather than refused by the proxy. */
export function cacheOption(v: string | undefined): { cache?: string } {
  if (v === undefined) return {};
  try {
    parseCacheTtl(v);
  } catch (e) {
    throw new CliError(`--cache: ${(e as Error).message}`, 2);
  }
  return { cache: v };
}

/** Prints a reply: the text, or the ChatCompletion JSON; an error result fails. */
export function printResult(r: ResultView): void {
  if (!r.ok) throw new CliError(`error ${r.code}: ${r.error}`);
  process.stdout.write(r.body.endsWith("\n") ? r.body : `${r.body}\n`);
}

export function requestCommand(): Command {
  const cmd = new Command("request")
    .description("send a request and wait for its reply")
    .argument("[prompt]", "the prompt (text request)");
  addCommonOptions(cmd)
    .option("--json <file>", "Chat Completions params as JSON ('-' for stdin)")
    .option("--timeout <ms>", "how long to wait for the reply", "60000")
    .option("--stream", "print tokens as they arrive (JSON requests get stream: true)")
    .option("--id <id>", "request id (default: a fresh one)")
    .option("--priority <p>", "high, normal or low (default high: someone is waiting)")
    .option("--tenant <t>", "who is served and charged (default: default)")
    .option(
      "--cache <ttl>",
      "answer from the response cache, and cache the answer, for ttl (10m, 30s)",
    )
    .option("--resume <id>", "print the streamed answer of an earlier request, following it live")
    .option("--after <n>", "with --resume: skip the first n deltas (you have them)")
    .action(
      action(async (prompt: string | undefined, f: RequestFlags) => {
        const timeoutMs = Number(f.timeout);
        if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
          throw new CliError(`--timeout must be a positive number of ms, got ${f.timeout}`, 2);
        if (f.after !== undefined && f.resume === undefined)
          throw new CliError("--after needs --resume <id>", 2);
        if (f.resume !== undefined) {
          if (prompt !== undefined || f.json !== undefined)
            throw new CliError("--resume reads an earlier request: give no prompt or --json", 2);
          const after = f.after === undefined ? 0 : Number(f.after);
          if (!Number.isInteger(after) || after < 0)
            throw new CliError(`--after must be a whole number ≥ 0, got ${f.after}`, 2);
          // --timeout is the default 60 s unless given: a resumed reader follows the
          // answer for as long as it was asked to.
          await withClient(f, (client) =>
            printStream(client.resume(f.resume!, { after, timeoutMs })),
          );
          return;
        }
        const input = readInput(prompt, f.json);
        const cache = cacheOption(f.cache);
        await withClient(f, async (client) => {
          if (f.stream) {
            const params =
              typeof input === "string" ? { messages: [{ role: "user", content: input }] } : input;
            const it = client.stream(params, {
              timeoutMs,
              ...(f.id ? { id: f.id } : {}),
              ...laneOptions(f, "high"),
              ...cache,
            });
            await printStream(it);
            return;
          }
          printResult(
            await client.request(input, {
              timeoutMs,
              ...(f.id ? { id: f.id } : {}),
              ...laneOptions(f, "high"),
              ...cache,
            }),
          );
        });
      }),
    );
  return cmd;
}
