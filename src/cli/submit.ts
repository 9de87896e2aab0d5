/**
 * `submit`: fire and forget. Prints the request id (or batch id) alone on stdout; a
 * resubmitted id is reported as a duplicate on stderr and is not an error.
 * `--file` takes an OpenAI Batch API input file; `--wait --out` writes the output file.
 */
import { Command } from "commander";
import { submitBatch, writeBatchOutput } from "../client/batch.js";
import {
  action,
  addCommonOptions,
  CliError,
  laneOptions,
  withClient,
  type CommonFlags,
} from "./common.js";
import { readInput } from "./input.js";
import { progressBar } from "./progress.js";
import { cacheOption, printResult } from "./request.js";

interface SubmitFlags extends CommonFlags {
  json?: string;
  file?: string;
  id?: string;
  strict?: boolean;
  wait?: boolean;
  out?: string;
  timeout?: string;
  priority?: string;
  tenant?: string;
  cache?: string;
}

export function submitCommand(): Command {
  const cmd = new Command("submit")
    .description("queue a request (or a batch file) and print its id")
    .argument("[prompt]", "the prompt (text request)");
  addCommonOptions(cmd)
    .option("--json <file>", "Chat Completions params as JSON ('-' for stdin)")
    .option(
      "--file <requests.jsonl>",
      "OpenAI Batch API input file ({custom_id, method, url, body} per line)",
    )
    .option("--id <id>", "request id, or batch id with --file (default: a fresh one)")
    .option("--strict", "with --file: refuse the whole file if any line is invalid")
    .option("--wait", "wait for the result (or every result of the batch)")
    .option("--out <results.jsonl>", "with --file --wait: write the Batch API output file")
    .option("--timeout <ms>", "with --wait: give up after this long (per result)")
    .option("--priority <p>", "high, normal or low (default normal; low with --file)")
    .option("--tenant <t>", "who is served and charged (default: default)")
    .option(
      "--cache <ttl>",
      "answer from the response cache, and cache the answer, for ttl (10m, 30s)",
    )
    .action(
      action(async (prompt: string | undefined, f: SubmitFlags) => {
        const timeoutMs = f.timeout ? Number(f.timeout) : undefined;
        if (f.file !== undefined) {
          if (prompt !== undefined || f.json !== undefined)
            throw new CliError("give a prompt, --json or --file, one of them", 2);
          if (f.out && !f.wait)
            throw new CliError("--out needs --wait (or use: result --batch <id> --out file)", 2);
          await withClient(f, async (client) => {
            const m = await submitBatch(client, f.file!, {
              ...(f.id ? { batchId: f.id } : {}),
              ...cacheOption(f.cache),
              strict: f.strict ?? false,
              ...laneOptions(f, "low"),
              progress: progressBar(),
              onInvalid: (l) => process.stderr.write(`line ${l.line}: ${l.error} (skipped)\n`),
            });
            process.stdout.write(`${m.batch_id}\n`);
            process.stderr.write(
              `batch ${m.batch_id}: ${m.requests} request(s) queued, ${m.invalid.length} invalid line(s) skipped\n`,
            );
            if (f.wait) {
              const out = f.out ?? "/dev/null";
              const c = await writeBatchOutput(client, m, out, {
                wait: true,
                ...(timeoutMs ? { timeoutMs } : {}),
                progress: progressBar(),
              });
              process.stderr.write(
                `batch ${m.batch_id}: ${c.completed} completed, ${c.failed} failed, ${c.invalid} invalid, ${c.missing} missing${f.out ? ` → ${f.out}` : ""}\n`,
              );
              if (c.missing > 0) process.exitCode = 1;
            }
          });
          return;
        }
        const input = readInput(prompt, f.json);
        await withClient(f, async (client) => {
          const s = await client.submit(input, {
            ...(f.id ? { id: f.id } : {}),
            ...laneOptions(f, "normal"),
            ...cacheOption(f.cache),
          });
          process.stdout.write(`${s.id}\n`);
          if (s.duplicate)
            process.stderr.write(
              `duplicate: request ${s.id} was already accepted; not queued again\n`,
            );
          if (f.wait) {
            const r = await client.result(s.id, {
              wait: true,
              ...(timeoutMs ? { timeoutMs } : {}),
            });
            if (!r)
              throw new CliError(
                `no result for ${s.id} within ${timeoutMs} ms; it is still queued`,
              );
            printResult(r);
          }
        });
      }),
    );
  return cmd;
}
