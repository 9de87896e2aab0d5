/**
 * Least privilege (docs/security.md): the proxy, a submitter, an isolated application and an
 * operator run under exactly the permissions documented there — the `authorization` block is
 * read from the document and handed verbatim to a nats-server that enforces it. Everything each
 * role is meant to do works without a single permission violation; what it must not do fails.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  connect,
  createInbox,
  nkeyAuthenticator,
  type ConnectionOptions,
  type Msg,
  type NatsConnection,
} from "@nats-io/transport-node";
import {
  makeNkeyUser,
  startNatsServer,
  type NatsServerHandle,
  type NkeyUser,
} from "../helpers/nats-server.js";
import {
  eventually,
  makeStreamsDir,
  ROOT,
  spawnCli,
  startTestProxy,
  testConfig,
} from "../helpers/proxy.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import { createClient, type ProxyClient } from "../../src/client/client.js";
import { DeadLetters } from "../../src/client/dlq.js";
import { applyDefinitions } from "../../src/nats/streams.js";
import { definitionsFor } from "../../src/nats/definitions.js";
import type { Proxy } from "../../src/main.js";
import { rpmWindow } from "../../src/worker/ratelimit.js";

const sc = {
  encode: (s: string) => new TextEncoder().encode(s),
  decode: (d: Uint8Array) => new TextDecoder().decode(d),
};
const ANSWER = "(dev-openai test double) You said: ";
/** The inbox prefix of the isolated application "alice" (docs/security.md). */
const ALICE_INBOX = "_INBOX_APP.alice";
const DENIED = /permissions violation/i;

/** The one `authorization { ... }` block of docs/security.md, verbatim. */
function documentedAuthorization(): string {
  const md = readFileSync(join(ROOT, "docs/security.md"), "utf8");
  const blocks = [...md.matchAll(/```conf\n([\s\S]*?)```/g)]
    .map((m) => m[1] ?? "")
    .filter((b) => b.trimStart().startsWith("authorization {"));
  const [block] = blocks;
  if (blocks.length !== 1 || block === undefined) {
    throw new Error(`docs/security.md: expected one authorization block, found ${blocks.length}`);
  }
  return block;
}

/** The server's "Publish Violation" / "Subscription Violation" log lines. */
function violations(log: string): string[] {
  return log.split("\n").filter((l) => /violation/i.test(l));
}

// max_deliver 2 keeps the poison scenario short.
const streams = makeStreamsDir({ maxDeliver: 2 });
const scratch = mkdtempSync(join(tmpdir(), "permissions-test-"));
let server: NatsServerHandle;
let dev: DevOpenAI;
let users: Record<"proxy" | "submitter" | "alice" | "operator", NkeyUser>;
const conns: NatsConnection[] = [];
const proxies: Proxy[] = [];
/** Asynchronous errors (permission violations) reported to any connection of the test. */
const statusErrors: string[] = [];

let submitterNc: NatsConnection;
let submitter: ProxyClient;
let aliceNc: NatsConnection;
let alice: ProxyClient;
let operatorNc: NatsConnection;
let deadLetters: DeadLetters;

function watchErrors(nc: NatsConnection, who: string): void {
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error") statusErrors.push(`${who}: ${JSON.stringify(s)}`);
    }
  })();
}

async function connectAs(
  user: NkeyUser,
  who: string,
  opts: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  const nc = await connect({
    servers: server.url,
    authenticator: nkeyAuthenticator(new TextEncoder().encode(user.seed)),
    ...opts,
  });
  conns.push(nc);
  watchErrors(nc, who);
  return nc;
}

/** Rate limits every proxy here runs with (high enough not to slow the test down). */
const LIMITS = { "gpt-4o-mini": { rpm: 6000, tpm: 10_000_000 } };

/** A proxy in this process, connected with the proxy role's nkey. */
async function proxy(limits: Record<string, unknown> = LIMITS): Promise<Proxy> {
  const p = await startTestProxy({
    natsUrl: server.url,
    openaiUrl: dev.url,
    streamsDir: streams.dir,
    flags: { "nats.nkey_seed_file": users.proxy.seedFile, "limits.models": limits },
  });
  proxies.push(p);
  watchErrors(p.nc, "proxy");
  return p;
}

/** Stops a proxy; with grace 0 its in-flight requests are nak'ed at once. */
async function stopProxy(p: Proxy | undefined, graceMs: number): Promise<void> {
  if (!p) throw new Error("no proxy");
  proxies.splice(proxies.indexOf(p), 1);
  await p.stop(graceMs);
}

async function first(sub: AsyncIterable<Msg>): Promise<Msg> {
  for await (const m of sub) return m;
  throw new Error("subscription closed without a message");
}

/** Subscribes; resolves with the server's refusal, or undefined if a message came or 3 s passed. */
async function subscriptionRefusal(nc: NatsConnection, subject: string): Promise<unknown> {
  const sub = nc.subscribe(subject);
  const timer = setTimeout(() => sub.unsubscribe(), 3000);
  try {
    for await (const _ of sub) return undefined;
  } catch (e) {
    return e;
  } finally {
    clearTimeout(timer);
  }
  return undefined;
}

/** Runs a CLI verb as `user`; resolves with its exit code and output. */
async function cli(user: NkeyUser, args: string[]): Promise<{ code: number | null; out: string }> {
  const p = spawnCli([...args, "--nkey_seed_file", user.seedFile], {
    NATS_URL: server.url,
    STREAMS_DIR: streams.dir,
  });
  const code = await p.exited;
  return { code, out: p.output() };
}

beforeAll(async () => {
  const [p, s, a, o] = await Promise.all([
    makeNkeyUser(),
    makeNkeyUser(),
    makeNkeyUser(),
    makeNkeyUser(),
  ]);
  users = { proxy: p, submitter: s, alice: a, operator: o };
  // The document refers to the nkeys as variables; define them in front of its block.
  const vars =
    `PROXY_NKEY: "${p.publicKey}"\nSUBMITTER_NKEY: "${s.publicKey}"\n` +
    `ALICE_NKEY: "${a.publicKey}"\nOPERATOR_NKEY: "${o.publicKey}"\n`;
  [server, dev] = await Promise.all([
    startNatsServer({ extraConfig: vars + documentedAuthorization() }),
    startDevOpenAI(),
  ]);
  // The operator creates the streams; the proxy may not (it only checks that they exist).
  operatorNc = await connectAs(users.operator, "operator");
  const operatorJsm = await jetstreamManager(operatorNc);
  await applyDefinitions(
    operatorJsm,
    definitionsFor(testConfig({ "streams.dir": streams.dir })).defs,
  );
  deadLetters = new DeadLetters(operatorNc, operatorJsm, {
    dlqStream: "OPENAI_DLQ",
    dlqPrefix: "openai.dlq",
    requestsPrefix: "openai.requests",
  });
  submitterNc = await connectAs(users.submitter, "submitter");
  submitter = await createClient(submitterNc);
  aliceNc = await connectAs(users.alice, "alice", { inboxPrefix: ALICE_INBOX });
  alice = await createClient(aliceNc);
});

afterAll(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.stop(200)));
  await Promise.all(conns.map((nc) => nc.close()));
  await Promise.all([server?.stop(), dev?.close()]);
  streams.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

describe("least privilege: the roles of docs/security.md on a server enforcing them", () => {
  it("the proxy serves a submitter and an isolated application", async () => {
    await proxy();

    // submitter: durable request, compat request-reply, streaming, fire-and-forget + result
    const r = await submitter.request("hello durable", { timeoutMs: 10_000 });
    expect(r).toMatchObject({ ok: true, body: `${ANSWER}hello durable` });
    const compat = await submitterNc.request("openai_requests", sc.encode("hello compat"), {
      timeout: 10_000,
    });
    expect(sc.decode(compat.data)).toBe(`${ANSWER}hello compat`);
    const deltas: unknown[] = [];
    const streamed = await submitter.request(
      { messages: [{ role: "user", content: "hello stream" }], stream: true },
      { timeoutMs: 10_000, onDelta: (d) => deltas.push(d) },
    );
    expect(streamed.ok).toBe(true);
    expect(deltas.length).toBeGreaterThan(0);
    // ... its stream was stored (the proxy's openai.streams.>), and the submitter can resume it.
    let resumed = "";
    const it = submitter.resume(streamed.id, { timeoutMs: 10_000 });
    for (let n = await it.next(); ; n = await it.next()) {
      if (n.done) {
        expect(n.value.ok).toBe(true);
        break;
      }
      resumed +=
        (n.value as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? "";
    }
    expect(resumed).toBe(`${ANSWER}hello stream`);
    // ... and a cached request: the proxy creates and uses the KV bucket.
    const c1 = await submitter.request("hello cache", { cache: "1m", timeoutMs: 10_000 });
    const c2 = await submitter.request("hello cache", { cache: "1m", timeoutMs: 10_000 });
    expect(c2.body).toBe(c1.body);
    expect(c2.body).toBe(`${ANSWER}hello cache`);
    const { id } = await submitter.submit("fire and forget");
    const stored = await submitter.result(id, { wait: true, timeoutMs: 10_000 });
    expect(stored).toMatchObject({ ok: true, body: `${ANSWER}fire and forget` });

    // alice: replies only on her own inbox prefix, never through the results stream
    const aliceCompat = await aliceNc.request("openai_requests", sc.encode("alice compat"), {
      timeout: 10_000,
    });
    expect(sc.decode(aliceCompat.data)).toBe(`${ANSWER}alice compat`);
    const inbox = createInbox(ALICE_INBOX);
    const sub = aliceNc.subscribe(inbox, { max: 1 });
    await alice.submit("alice durable", { replyTo: inbox });
    expect(sc.decode((await first(sub)).data)).toBe(`${ANSWER}alice durable`);
  });

  it("the submitter's CLI verbs work: request, submit --file --wait, result --batch", async () => {
    const req = await cli(users.submitter, ["request", "hello cli"]);
    expect(req.code, req.out).toBe(0);
    expect(req.out).toContain(`${ANSWER}hello cli`);
    const input = join(scratch, "batch.jsonl");
    const body = (text: string) => ({ messages: [{ role: "user", content: text }] });
    writeFileSync(
      input,
      ["one", "two"]
        .map((t) =>
          JSON.stringify({
            custom_id: t,
            method: "POST",
            url: "/v1/chat/completions",
            body: body(t),
          }),
        )
        .join("\n") + "\n",
    );
    const out1 = join(scratch, "out1.jsonl");
    const sub = await cli(users.submitter, [
      "submit",
      "--file",
      input,
      "--id",
      "batch1",
      "--wait",
      "--timeout",
      "10000",
      "--out",
      out1,
    ]);
    expect(sub.code, sub.out).toBe(0);
    expect(sub.out).toContain("2 completed");
    const out2 = join(scratch, "out2.jsonl");
    const res = await cli(users.submitter, ["result", "--batch", "batch1", "--out", out2]);
    expect(res.code, res.out).toBe(0);
    const lines = readFileSync(out2, "utf8").trim().split("\n");
    expect(lines.map((l) => (JSON.parse(l) as { custom_id: string }).custom_id)).toEqual([
      "one",
      "two",
    ]);
  });

  it("the proxy dead-letters a poison message (advisory, message get and delete)", async () => {
    const POISON = "poison pill [[hang]]";
    const hung = (n: number) => () => (dev.stats().byPrompt[POISON] ?? 0) >= n;
    await submitter.submit(POISON, { id: "poison" });
    await eventually(hung(1), 10_000, "delivery 1");
    // Each "crash" naks the hanging request; the second one reaches max_deliver (2).
    const second = await proxy();
    await stopProxy(proxies[0], 0);
    await eventually(hung(2), 10_000, "delivery 2");
    await proxy();
    await stopProxy(second, 0);
    const res = await submitter.result("poison", { wait: true, timeoutMs: 15_000 });
    expect(res).toMatchObject({ ok: false, code: 500 });
    expect(res?.error).toContain("poison");
    expect((await deadLetters.show("poison"))?.code).toBe(500);
    expect(dev.stats().byPrompt[POISON]).toBe(2);
  });

  it("the proxy creates its rate-limit permit stream, and updates it when the limit changes", async () => {
    // The streams so far were created by the proxies above (rpm 6000: 100 permits a second).
    const before = proxies[proxies.length - 1]!;
    const permits = async (p: Proxy) =>
      (await (await jetstreamManager(p.nc)).streams.info("OPENAI_RATE_gpt-4o-mini")).config;
    expect((await permits(before)).max_msgs).toBe(rpmWindow(6000).permits);
    for (const p of [...proxies]) await stopProxy(p, 200);
    const changed = await proxy({ "gpt-4o-mini": { rpm: 3000, tpm: 10_000_000 } });
    const r = await submitter.request("after a limit change", { timeoutMs: 10_000 });
    expect(r).toMatchObject({ ok: true, body: `${ANSWER}after a limit change` });
    expect((await permits(changed)).max_msgs).toBe(rpmWindow(3000).permits);
    expect((await deadLetters.list()).map((d) => d.id)).toEqual(["poison"]);
  });

  it("none of that caused a permission violation", () => {
    expect(violations(server.logs())).toEqual([]);
    expect(statusErrors).toEqual([]);
  });

  it("an application without results access reads only its own replies", async () => {
    const other = await submitter.request("the submitter's secret", {
      id: "secret-1",
      timeoutMs: 10_000,
    });
    expect(other.ok).toBe(true);

    const t0 = Date.now();
    await expect(alice.result("secret-1")).rejects.toThrow(DENIED);
    await expect(alice.result("secret-1", { wait: true, timeoutMs: 1000 })).rejects.toThrow(DENIED);
    const jsm = await jetstreamManager(aliceNc);
    await expect(
      jsm.streams.getMessage("OPENAI_RESULTS", { last_by_subj: "openai.results.secret-1" }),
    ).rejects.toThrow(DENIED);
    expect(Date.now() - t0).toBeLessThan(3000);
    // No eavesdropping on stored results, on default inboxes or on other applications' inboxes.
    for (const subject of ["openai.results.>", "_INBOX.>", "_INBOX_APP.>", "_INBOX_APP.bob.>"]) {
      expect(String(await subscriptionRefusal(aliceNc, subject)), subject).toMatch(DENIED);
    }

    const inbox = createInbox(ALICE_INBOX);
    const sub = aliceNc.subscribe(inbox, { max: 1 });
    await alice.submit("alice's own", { replyTo: inbox });
    expect(sc.decode((await first(sub)).data)).toBe(`${ANSWER}alice's own`);
  });

  it("submitters cannot write results or dead letters, purge streams or delete the consumer", async () => {
    for (const nc of [submitterNc, aliceNc]) {
      const js = jetstream(nc);
      const jsm = await jetstreamManager(nc);
      const attempts: [string, () => Promise<unknown>][] = [
        ["publish a result", () => js.publish("openai.results.forged", sc.encode("x"))],
        ["publish a dead letter", () => js.publish("openai.dlq.forged", sc.encode("x"))],
        ["purge the queue", () => jsm.streams.purge("OPENAI_REQUESTS")],
        ["purge the results", () => jsm.streams.purge("OPENAI_RESULTS")],
        ["delete the DLQ", () => jsm.streams.delete("OPENAI_DLQ")],
        [
          "delete the consumer",
          () => jsm.consumers.delete("OPENAI_REQUESTS", "openai-proxy-default-normal"),
        ],
        [
          "pull the proxy's work",
          // Reading a lane's depth is allowed (max_queued); pulling from it is not.
          () =>
            nc.request(
              "$JS.API.CONSUMER.MSG.NEXT.OPENAI_REQUESTS.openai-proxy-default-normal",
              JSON.stringify({ batch: 1, no_wait: true }),
              { timeout: 2000 },
            ),
        ],
      ];
      for (const [what, attempt] of attempts) {
        await expect(attempt(), what).rejects.toThrow(DENIED);
      }
      // A plain core publish is dropped by the server too (reported asynchronously).
      nc.publish("openai.results.forged", sc.encode("x"));
      await nc.flush();
    }
    const jsm = await jetstreamManager(operatorNc);
    const results = await jsm.streams.info("OPENAI_RESULTS", {
      subjects_filter: "openai.results.forged",
    });
    expect(results.state.subjects ?? {}).toEqual({});
    expect((await jsm.streams.info("OPENAI_DLQ")).state.messages).toBe(1); // the poison only
    expect((await jsm.consumers.info("OPENAI_REQUESTS", "openai-proxy-default-normal")).name).toBe(
      "openai-proxy-default-normal",
    );
    expect(await submitter.result("secret-1")).toMatchObject({ ok: true });
  });

  it("the operator runs streams apply/info and dlq list/show/replay/purge", async () => {
    const mark = server.logs().length;
    // Fails once with a permanent 400 (dead-lettered), succeeds when replayed.
    const PROMPT = "refused once [[status:400x1]]";
    const failed = await submitter.request(PROMPT, { id: "replay-me", timeoutMs: 10_000 });
    expect(failed).toMatchObject({ ok: false, code: 400 });

    const apply = await cli(users.operator, ["streams", "apply"]);
    expect(apply.code, apply.out).toBe(0);
    expect(apply.out).toContain("nothing to change");
    const info = await cli(users.operator, ["streams", "info"]);
    expect(info.code, info.out).toBe(0);
    expect(info.out).toMatch(/stream OPENAI_DLQ: 2 msgs/);
    expect(info.out).toMatch(/^\s+default\s+normal\s+0\s+0\s+\d+\s+openai-proxy-default-normal$/m);
    const list = await cli(users.operator, ["dlq", "list"]);
    expect(list.code, list.out).toBe(0);
    expect(list.out).toMatch(/^poison\t500/m);
    expect(list.out).toMatch(/^replay-me\t400/m);
    const show = await cli(users.operator, ["dlq", "show", "replay-me"]);
    expect(show.code, show.out).toBe(0);
    expect(show.out).toContain(PROMPT);
    const replay = await cli(users.operator, ["dlq", "replay", "replay-me"]);
    expect(replay.code, replay.out).toBe(0);
    expect(replay.out).toContain("replayed 1 dead letter(s)");
    await eventually(
      async () => (await submitter.result("replay-me"))?.ok === true,
      10_000,
      "the replayed request to succeed",
    );
    expect(await deadLetters.show("replay-me")).toBeNull();
    const purge = await cli(users.operator, ["dlq", "purge"]);
    expect(purge.code, purge.out).toBe(0);
    expect(purge.out).toContain("purged 1 dead letter(s)");

    expect(violations(server.logs().slice(mark))).toEqual([]);
    const ours = statusErrors.filter((e) => !/^(submitter|alice):/.test(e));
    expect(ours).toEqual([]);
  });

  it("serve does not create a missing stream without permission; the operator does", async () => {
    const jsm = await jetstreamManager(operatorNc);
    await jsm.streams.delete("OPENAI_BATCHES");
    await expect(proxy()).rejects.toThrow(/Permissions Violation.*STREAM\.CREATE\.OPENAI_BATCHES/);
    const reports = await applyDefinitions(
      jsm,
      definitionsFor(testConfig({ "streams.dir": streams.dir })).defs,
    );
    expect(reports.filter((r) => r.action === "created").map((r) => r.name)).toEqual([
      "OPENAI_BATCHES",
    ]);
  });

  // Gaps that permissions cannot close (docs/security.md, "What permissions cannot fix").
});
