/**
 * `result <id> [--wait]`: read (or wait for) a stored result.
 * `result --batch <id> --out file`: write a batch's Batch API output file.
 */
import { Command } from "commander";
import { readManifest, writeBatchOutput } from "../client/batch.js";
import { action, addCommonOptions, CliError, withClient, type CommonFlags } from "./common.js";
import { progressBar } from "./progress.js";
import { printResult } from "./request.js";

interface ResultFlags extends CommonFlags {
  wait?: boolean;
  timeout?: string;
  batch?: string;
  out?: string;
}

export function resultCommand(): Command {
  const cmd = new Command("result")
    .description("print the stored result of a request, or write a batch's output file")
    .argument("[id]", "request id");
  addCommonOptions(cmd)
    .option("--wait", "wait until the result exists")
    .option("--timeout <ms>", "with --wait: give up after this long")
    .option("--batch <id>", "a batch id (from submit --file)")
    .option("--out <file>", "with --batch: the Batch API output file to write")
    .action(
      action(async (id: string | undefined, f: ResultFlags) => {
        const timeoutMs = f.timeout ? Number(f.timeout) : undefined;
        if (f.batch) {
          if (!f.out) throw new CliError("--batch needs --out <file>", 2);
          await withClient(f, async (client) => {
            const m = await readManifest(client, f.batch!);
            if (!m)
              throw new CliError(
                `no batch ${f.batch} (unknown, or older than the batches stream keeps)`,
              );
            const c = await writeBatchOutput(client, m, f.out!, {
              wait: f.wait ?? false,
              ...(timeoutMs ? { timeoutMs } : {}),
              progress: progressBar(),
            });
            process.stderr.write(
              `batch ${m.batch_id}: ${c.completed} completed, ${c.failed} failed, ${c.invalid} invalid, ${c.missing} missing → ${f.out}\n`,
            );
            if (c.missing > 0) process.exitCode = 1;
          });
          return;
        }
        if (!id) throw new CliError("give a request id, or --batch <id> --out <file>", 2);
        await withClient(f, async (client) => {
          const r = await client.result(id, {
            wait: f.wait ?? false,
            ...(timeoutMs ? { timeoutMs } : {}),
          });
          if (!r)
            throw new CliError(
              f.wait
                ? `no result for ${id} within ${timeoutMs} ms (still queued or unknown)`
                : `no result for ${id} yet (use --wait to wait for it)`,
            );
          printResult(r);
        });
      }),
    );
  return cmd;
}
