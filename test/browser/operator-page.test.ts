/**
 * The operator page in a real browser: Debian's chromium, headless, driven by
 * playwright-core against a real nats-server, the test double and an in-process proxy
 * with a token. It asks for the token, shows a dead letter the test produced, replays and
 * deletes from its buttons, shows the queue depths `streams info` prints, fits a laptop
 * screen, and leaves a screenshot in docs/operator-page.png.
 *
 * Chromium is installed by scripts/chromium.sh when missing; if that fails the test fails
 * with its message: nothing is skipped.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, type NatsServerHandle } from "../helpers/nats-server.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import {
  ROOT,
  eventually,
  makeStreamsDir,
  serveEnv,
  spawnCli,
  startTestProxy,
  testClient,
} from "../helpers/proxy.js";
import type { Proxy } from "../../src/main.js";
import type { ProxyClient } from "../../src/client/client.js";

const TOKEN = "browser-test-token-0123456789";
const TENANTS = { default: { weight: 1 }, acme: { weight: 1 } };
const VIEWPORT = { width: 1366, height: 768 };
// docs/operator-page.png is rewritten with UPDATE_SCREENSHOT=1 (make screenshot) or when it
// is missing; otherwise the screenshot goes to a temporary file, so a test run leaves the
// committed one alone.
const DOCS_SCREENSHOT = join(ROOT, "docs/operator-page.png");
const UPDATE = process.env.UPDATE_SCREENSHOT === "1" || !existsSync(DOCS_SCREENSHOT);

let server: NatsServerHandle;
let dev: DevOpenAI;
let nc: NatsConnection;
let client: ProxyClient;
let proxy: Proxy;
let base: string;
let context: BrowserContext;
let page: Page;
let profile: string;
const apiStatuses: number[] = [];
const streams = makeStreamsDir({ ackWaitMs: 5000 });

/** Debian's chromium, installed when missing; a clear failure when it cannot be. */
function chromiumPath(): string {
  try {
    return execFileSync(join(ROOT, "scripts/chromium.sh"), {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 900_000,
    }).trim();
  } catch (e) {
    throw new Error(
      `the browser tests need Debian's chromium and scripts/chromium.sh could not provide it (${(e as Error).message}); install it with "make chromium" or "apt-get install chromium"`,
    );
  }
}

beforeAll(async () => {
  const executablePath = chromiumPath();
  [server, dev] = await Promise.all([startNatsServer(), startDevOpenAI()]);
  ({ client, nc } = await testClient(server.url));
  proxy = await startTestProxy({
    natsUrl: server.url,
    openaiUrl: dev.url,
    streamsDir: streams.dir,
    flags: {
      "http.enabled": true,
      "http.port": 0,
      "http.token": TOKEN,
      "worker.concurrency": 1,
      tenants: TENANTS,
    },
  });
  base = `http://127.0.0.1:${proxy.http!.port}`;
  profile = mkdtempSync(join(tmpdir(), "operator-page-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: VIEWPORT,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("dialog", (d) => void d.accept());
  page.on("response", (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/")) apiStatuses.push(r.status());
  });
}, 900_000);

afterAll(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await proxy?.stop(500);
  await nc?.close();
  await Promise.all([server?.stop(), dev?.close()]);
  streams.cleanup();
});

const row = (id: string) => page.locator(`tr[data-dlq-id="${id}"]`);

describe("operator page", () => {
  it("asks for the token: without it the API refuses (401), with it the page fills in", async () => {
    await page.goto(base);
    await page.locator("#login").waitFor({ state: "visible", timeout: 10_000 });
    expect(apiStatuses.length).toBeGreaterThan(0);
    expect(apiStatuses.every((s) => s === 401)).toBe(true);
    expect(await page.locator("#app").isHidden()).toBe(true);

    await page.fill("#token", "a-wrong-token-of-some-length");
    await page.click("#login button[type=submit]");
    await page.locator("#login-error", { hasText: "refused" }).waitFor({ timeout: 10_000 });
    expect(apiStatuses.at(-1)).toBe(401);

    const before = apiStatuses.length;
    await page.fill("#token", TOKEN);
    await page.click("#login button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible", timeout: 10_000 });
    await page.locator("#status", { hasText: "updated" }).waitFor({ timeout: 10_000 });
    expect(await page.locator("#login").isHidden()).toBe(true);
    expect(apiStatuses.slice(before).every((s) => s === 200)).toBe(true);
    expect(
      await page.evaluate<string | null>('sessionStorage.getItem("nats-openai-proxy.token")'),
    ).toBe(TOKEN);
    // The token is in this tab's sessionStorage only, never in the page itself.
    expect(await page.content()).not.toContain(TOKEN);
    expect(await page.locator("#breaker").textContent()).toBe("closed");
  });

  it("shows a dead letter the test produced; its replay button makes the request complete", async () => {
    const id = "browser-replay";
    const failed = await client.request("[[status:400x1]] replay me from the page", {
      id,
      timeoutMs: 10_000,
    });
    expect(failed.code).toBe(400);
    await row(id).waitFor({ timeout: 10_000 });
    const cells = await row(id).locator("td").allTextContents();
    expect(cells.slice(0, 3)).toEqual([id, "default (high)", "400"]);
    expect(cells[4]).toBe("1");
    await row(id).locator('[data-action="replay"]').click();
    await row(id).waitFor({ state: "detached", timeout: 10_000 });
    await eventually(
      async () => (await client.result(id))?.ok === true,
      10_000,
      "the replayed request's result",
    );
    const r = await client.result(id);
    expect(r?.body).toContain("replay me from the page");
    // It stays gone on the next updates.
    await page.locator("#status", { hasText: "updated" }).waitFor();
    expect(await row(id).count()).toBe(0);
  });

  it("deletes a dead letter from its delete button", async () => {
    const id = "browser-delete";
    await client.request(
      { model: "gpt-unknown", messages: [{ role: "user", content: "delete me" }] },
      { id, timeoutMs: 10_000 },
    );
    await row(id).waitFor({ timeout: 10_000 });
    await row(id).locator('[data-action="delete"]').click();
    await row(id).waitFor({ state: "detached", timeout: 10_000 });
    const api = await fetch(`${base}/api/dlq?limit=500`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const ids = ((await api.json()) as { items: { id: string }[] }).items.map((d) => d.id);
    expect(ids).not.toContain(id);
  });

  it("shows the queue depths streams info prints, and the overview fits a laptop screen", async () => {
    // Dead letters to show, then a backlog that holds still: the only slot hangs.
    for (const n of [1, 2, 3])
      await client.request(
        { model: "gpt-unknown", messages: [{ role: "user", content: `unknown model ${n}` }] },
        { id: `dead-${n}`, timeoutMs: 10_000 },
      );
    await client.submit("[[hang]] holds the only slot", { priority: "high" });
    await eventually(() => proxy.worker.inFlight === 1, 10_000, "the hanging call");
    for (let i = 0; i < 4; i++)
      await client.submit(`acme batch ${i}`, { tenant: "acme", priority: "low" });
    for (let i = 0; i < 2; i++) await client.submit(`acme ${i}`, { tenant: "acme" });
    await client.submit("default normal", { priority: "normal" });

    const info = spawnCli(
      ["streams", "info"],
      serveEnv(server.url, dev.url, streams.dir, { PROXY_TENANTS: JSON.stringify(TENANTS) }),
    );
    expect(await info.exited).toBe(0);
    const table = info.stdout().split("queue depth by tenant and priority")[1] ?? "";
    const printed = new Map<string, { pending: string; inFlight: string }>();
    for (const line of table.split("\n").slice(1)) {
      const m = /^ {2}(\S+)\s+(high|normal|low)\s+(\d+)\s+(\d+)\s+\d+\s+\S+/.exec(line);
      if (m) printed.set(`${m[1]}/${m[2]}`, { pending: m[3]!, inFlight: m[4]! });
    }
    expect(printed.size).toBe(6);
    expect(printed.get("acme/low")).toEqual({ pending: "4", inFlight: "0" });
    expect(printed.get("acme/normal")).toEqual({ pending: "2", inFlight: "0" });
    expect(printed.get("default/high")).toEqual({ pending: "0", inFlight: "1" });

    const shown = async () => {
      const out = new Map<string, { pending: string; inFlight: string }>();
      for (const c of await page.locator("#lanes td[data-tenant]").all()) {
        const a = (k: string) => c.getAttribute(`data-${k}`).then((v) => v ?? "");
        out.set(`${await a("tenant")}/${await a("priority")}`, {
          pending: await a("pending"),
          inFlight: await a("ack-pending"),
        });
      }
      return out;
    };
    const sorted = (m: Map<string, unknown>) => JSON.stringify([...m].sort());
    await eventually(
      async () => sorted(await shown()) === sorted(printed),
      10_000,
      "the page's lane depths to equal streams info's",
    );
    expect(await page.locator("#queued").textContent()).toBe("7");
    expect(await page.locator("#inflight").textContent()).toBe("1");
    await row("dead-3").waitFor({ timeout: 10_000 });

    // The overview (cards, charts, lanes) is on screen without scrolling.
    const box = await page.locator("section.lanes").boundingBox();
    expect(box).not.toBeNull();
    expect(box!.y + box!.height).toBeLessThanOrEqual(VIEWPORT.height);
    expect(await page.locator("#chart-throughput svg path").count()).toBeGreaterThan(0);
    const shot = UPDATE ? DOCS_SCREENSHOT : join(profile, "operator-page.png");
    await page.screenshot({ path: shot });
    const png = readFileSync(shot);
    expect(png.subarray(1, 4).toString()).toBe("PNG");
    // IHDR: width and height, big-endian, at bytes 16 and 20.
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([VIEWPORT.width, VIEWPORT.height]);
  });
});
