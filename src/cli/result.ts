/**
 * `result <id> [--wait]`: read (or wait for) a stored result.
 */
import { Command } from "commander";
import { action, addCommonOptions, CliError, withClient, type CommonFlags } from "./common.js";
import { printResult } from "./request.js";

interface ResultFlags extends CommonFlags {
  wait?: boolean;
  timeout?: string;
}

export function resultCommand(): Command {
  const cmd = new Command("result")
    .description("print the stored result of a request")
    .argument("<id>", "request id");
  addCommonOptions(cmd)
    .option("--wait", "wait until the result exists")
    .option("--timeout <ms>", "with --wait: give up after this long")
    .action(
      action(async (id: string, f: ResultFlags) => {
        const timeoutMs = f.timeout ? Number(f.timeout) : undefined;
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
