/**
 * `dlq list | show <id> | replay <id>|--all | purge`.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Command } from "commander";
import { DeadLetters, NotReplayableError } from "../client/dlq.js";
import { action, addCommonOptions, CliError, withClient, type CommonFlags } from "./common.js";
import type { ProxyClient } from "../client/client.js";
import type { Config } from "../config/schema.js";

const dec = new TextDecoder();

function deadLetters(client: ProxyClient, c: Config): Promise<DeadLetters> {
  return jetstreamManager(client.nc).then(
    (jsm) =>
      new DeadLetters(client.nc, jsm, {
        dlqStream: c.streams.dlq,
        dlqPrefix: c.streams.dlq_prefix,
        requestsPrefix: c.streams.requests_prefix,
      }),
  );
}

export function dlqCommand(): Command {
  const cmd = new Command("dlq").description("inspect, replay or purge dead letters");
  cmd.addCommand(
    addCommonOptions(new Command("list"))
      .description("one line per dead letter: id, code, attempts, failed at, error")
      .action(
        action(async (f: CommonFlags) => {
          await withClient(f, async (client, config) => {
            const list = await (await deadLetters(client, config)).list();
            for (const d of list)
              process.stdout.write(
                `${d.id}\t${d.code}\tattempts=${d.attempts}\t${d.failedAt}\t${d.error}\n`,
              );
            process.stderr.write(`${list.length} dead letter(s)\n`);
          });
        }),
      ),
  );
  cmd.addCommand(
    addCommonOptions(new Command("show"))
      .description("headers and body of one dead letter")
      .argument("<id>", "request id")
      .action(
        action(async (id: string, f: CommonFlags) => {
          await withClient(f, async (client, config) => {
            const d = await (await deadLetters(client, config)).show(id);
            if (!d) throw new CliError(`no dead letter for ${id}`);
            for (const [k, vs] of d.headers)
              for (const v of vs) process.stdout.write(`${k}: ${v}\n`);
            process.stdout.write(`\n${dec.decode(d.data)}\n`);
          });
        }),
      ),
  );
  cmd.addCommand(
    addCommonOptions(new Command("replay"))
      .description("put dead letters back into the request queue")
      .argument("[id]", "request id")
      .option("--all", "replay every dead letter")
      .action(
        action(async (id: string | undefined, f: CommonFlags & { all?: boolean }) => {
          if (!id === !f.all) throw new CliError("give a request id or --all", 2);
          await withClient(f, async (client, config) => {
            const dl = await deadLetters(client, config);
            const items = f.all ? await dl.list() : [await dl.show(id!)];
            if (items[0] === null) throw new CliError(`no dead letter for ${id}`);
            let n = 0;
            let refused = 0;
            for (const d of items) {
              if (!d) continue;
              try {
                await dl.replay(d);
              } catch (e) {
                if (!(e instanceof NotReplayableError)) throw e;
                if (!f.all) throw new CliError(e.message);
                // --all goes on with the others and fails at the end.
                process.stderr.write(`${e.message}\n`);
                refused++;
                continue;
              }
              process.stdout.write(`${d.id}\n`);
              n++;
            }
            process.stderr.write(
              `replayed ${n} dead letter(s)${refused ? `, ${refused} cannot be replayed (above)` : ""}\n`,
            );
            if (refused) process.exitCode = 1;
          });
        }),
      ),
  );
  cmd.addCommand(
    addCommonOptions(new Command("purge"))
      .description("delete every dead letter")
      .action(
        action(async (f: CommonFlags) => {
          await withClient(f, async (client, config) => {
            const n = await (await deadLetters(client, config)).purge();
            process.stdout.write(`purged ${n} dead letter(s)\n`);
          });
        }),
      ),
  );
  return cmd;
}
