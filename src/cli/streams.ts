/**
 * `streams apply | info | purge | delete`: operator management of the streams and
 * the durable consumer defined in streams/*.json.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Command } from "commander";
import type { JetStreamManager } from "@nats-io/jetstream";
import { connectNats } from "../nats/connect.js";
import { definitionsFor, type ConfiguredDefinitions } from "../nats/definitions.js";
import { laneDepths, laneTable } from "../nats/depths.js";
import { applyDefinitions, formatReport } from "../nats/streams.js";
import {
  action,
  addCommonOptions,
  CliError,
  configFrom,
  loggerFor,
  type CommonFlags,
} from "./common.js";

interface StreamFlags extends CommonFlags {
  dir?: string;
  force?: boolean;
  replicas?: string;
}

async function withJsm<T>(
  f: StreamFlags,
  fn: (jsm: JetStreamManager, d: ConfiguredDefinitions) => Promise<T>,
): Promise<T> {
  const { config } = configFrom(f);
  const log = loggerFor(config);
  const nc = await connectNats(config.nats, log, `${config.nats.name}-streams`);
  try {
    const jsm = await jetstreamManager(nc);
    const r = f.replicas ?? process.env.STREAMS_REPLICAS;
    const replicas = r ? Number(r) : undefined;
    if (replicas !== undefined && (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)) {
      throw new CliError(`--replicas must be an integer from 1 to 5, got ${r}`, 2);
    }
    return await fn(jsm, definitionsFor(config, f.dir, replicas));
  } finally {
    await nc.close();
  }
}

export function streamsCommand(): Command {
  const cmd = new Command("streams").description(
    "create, inspect, purge or delete the streams and the consumer",
  );
  const withOpts = (c: Command) =>
    addCommonOptions(c)
      .option("--dir <dir>", "definitions directory (streams.dir)")
      .option("--replicas <n>", "override num_replicas of every stream (STREAMS_REPLICAS)");

  cmd.addCommand(
    withOpts(new Command("apply"))
      .description("create or update streams and consumer from the definitions (idempotent)")
      .option(
        "--force",
        "allow destructive changes (retention, storage, ack policy): deletes and recreates",
      )
      .action(
        action(async (f: StreamFlags) => {
          await withJsm(f, async (jsm, { defs, names }) => {
            const reports = await applyDefinitions(jsm, defs, {
              force: f.force ?? false,
              prune: { stream: names.stream, consumerBase: names.consumerBase },
            });
            for (const r of reports) process.stdout.write(`${formatReport(r)}\n`);
            const changed = reports.filter((r) => r.action !== "unchanged").length;
            process.stdout.write(
              changed === 0
                ? "nothing to change: everything matches the definitions\n"
                : `${changed} change(s) applied\n`,
            );
          });
        }),
      ),
  );
  cmd.addCommand(
    withOpts(new Command("info"))
      .description("show each stream's and the consumer's state")
      .action(
        action(async (f: StreamFlags) => {
          await withJsm(f, async (jsm, { defs, lanes, names }) => {
            for (const s of defs.streams) {
              try {
                const i = await jsm.streams.info(s.name);
                const c = i.config;
                process.stdout.write(
                  `stream ${s.name}: ${i.state.messages} msgs, ${i.state.bytes} bytes, subjects ${c.subjects.join(",")}, ${c.retention}/${c.storage}, replicas ${c.num_replicas}, max_msgs ${c.max_msgs}, discard ${c.discard}\n`,
                );
              } catch {
                process.stdout.write(
                  `stream ${s.name}: missing (run "nats-openai-proxy streams apply")\n`,
                );
              }
            }
            const laneConsumers = new Set(lanes.map((l) => l.consumer));
            if (lanes.length > 0) {
              process.stdout.write(`queue depth by tenant and priority (${names.stream}):\n`);
              process.stdout.write(laneTable(await laneDepths(jsm, names.stream, lanes)));
            }
            for (const c of defs.consumers) {
              if (laneConsumers.has(c.config.durable_name)) continue;
              try {
                const i = await jsm.consumers.info(c.stream_name, c.config.durable_name);
                process.stdout.write(
                  `consumer ${c.stream_name}/${c.config.durable_name}: pending ${i.num_pending}, ack pending ${i.num_ack_pending}, redelivered ${i.num_redelivered}, waiting pulls ${i.num_waiting}, ack_wait ${(i.config.ack_wait ?? 0) / 1e9}s, max_deliver ${i.config.max_deliver}, max_ack_pending ${i.config.max_ack_pending}\n`,
                );
              } catch {
                process.stdout.write(
                  `consumer ${c.stream_name}/${c.config.durable_name}: missing\n`,
                );
              }
            }
          });
        }),
      ),
  );
  cmd.addCommand(
    withOpts(new Command("purge"))
      .description("remove every message from a stream (default: the request queue)")
      .argument("[stream]", "stream name", "OPENAI_REQUESTS")
      .action(
        action(async (stream: string, f: StreamFlags) => {
          await withJsm(f, async (jsm) => {
            const r = await jsm.streams.purge(stream);
            process.stdout.write(`purged ${r.purged} message(s) from ${stream}\n`);
          });
        }),
      ),
  );
  cmd.addCommand(
    withOpts(new Command("delete"))
      .description("delete a stream and its messages (needs --force)")
      .argument("<stream>", "stream name")
      .option("--force", "really delete")
      .action(
        action(async (stream: string, f: StreamFlags) => {
          if (!f.force)
            throw new CliError(
              `refusing to delete ${stream} without --force (its messages are lost)`,
              2,
            );
          await withJsm(f, async (jsm) => {
            await jsm.streams.delete(stream);
            process.stdout.write(`deleted stream ${stream}\n`);
          });
        }),
      ),
  );
  return cmd;
}
