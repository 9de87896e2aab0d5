/**
 * The operator page at `/`: a static HTML shell and stylesheet from here, and the browser
 * modules compiled from web/ (tsc -p web, into dist/web). The page holds no data and no
 * secret of its own; everything it shows comes from /api with the operator's token.
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import type { Route } from "./server.js";

/**
 * dist/web, found from this file both when it runs from src/ (tsx: tests, development) and
 * from dist/ (the build): `../../dist/web` is the same folder from either.
 */
export const WEB_DIR = fileURLToPath(new URL("../../dist/web/", import.meta.url));

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nats-openai-proxy</title>
<link rel="stylesheet" href="/page.css">
<script type="module" src="/web/main.js"></script>
</head>
<body>
<header>
  <h1>nats-openai-proxy</h1>
  <span id="status" class="muted">loading…</span>
</header>
<form id="login" hidden>
  <label>This proxy's API needs its token (http.token):
    <input id="token" type="password" autocomplete="current-password" required></label>
  <button type="submit">Use token</button>
  <span id="login-error" class="bad"></span>
</form>
<main id="app" hidden>
  <section class="cards">
    <div class="card"><h2>Queued</h2><div class="big" id="queued">–</div><div class="muted" id="queued-sub"></div></div>
    <div class="card"><h2>In flight</h2><div class="big" id="inflight">–</div><div class="muted" id="inflight-sub"></div></div>
    <div class="card"><h2>Breaker</h2><div class="big" id="breaker">–</div><div class="muted" id="worker-state"></div></div>
    <div class="card"><h2>Dead letters</h2><div class="big" id="dlq-count">–</div><div class="muted" id="dlq-stream"></div></div>
  </section>
  <section class="charts">
    <div class="chart"><h2>Throughput <span class="muted" id="tp-now"></span></h2><div id="chart-throughput"></div></div>
    <div class="chart"><h2>Latency p50 / p95 <span class="muted" id="lat-now"></span></h2><div id="chart-latency"></div></div>
    <div class="chart"><h2>Upstream p50 / p95 <span class="muted" id="up-now"></span></h2><div id="chart-upstream"></div></div>
  </section>
  <section class="lanes">
    <h2>Queue depth per priority and tenant <span class="muted">(stream <span id="stream"></span>)</span></h2>
    <table id="lanes"><thead><tr><th>tenant</th><th>high</th><th>normal</th><th>low</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="dlq">
    <h2>Dead letters <button type="button" id="replay-all">Replay all</button> <span id="dlq-msg" class="muted"></span></h2>
    <table id="dlq"><thead><tr><th>id</th><th>tenant</th><th>code</th><th>error</th><th>attempts</th><th>failed at</th><th></th></tr></thead><tbody></tbody></table>
    <button type="button" id="dlq-more" hidden>More</button>
  </section>
</main>
</body>
</html>
`;

const CSS = `
:root { color-scheme: light dark; --fg: #1d2430; --muted: #6b7485; --bg: #f6f7f9; --card: #fff;
  --line: #dde1e8; --accent: #2f6fdf; --ok: #1d8a4e; --bad: #c2362f; --warn: #b8770b; }
@media (prefers-color-scheme: dark) { :root { --fg: #e5e8ee; --muted: #99a1b0; --bg: #15181d;
  --card: #1e232a; --line: #333a45; --accent: #6aa1ff; --ok: #43c07a; --bad: #ff6b62; --warn: #f0b040; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; padding: 12px 18px; font: 13px/1.35 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 14px; margin-bottom: 10px; }
h1 { font-size: 17px; margin: 0; }
h2 { font-size: 12px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
.muted { color: var(--muted); font-weight: normal; text-transform: none; letter-spacing: 0; }
.bad { color: var(--bad); } .ok { color: var(--ok); } .warn { color: var(--warn); }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; margin-bottom: 10px; }
.card, .chart, .lanes, .dlq { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.big { font-size: 24px; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; margin-bottom: 10px; }
.chart svg { width: 100%; height: 64px; display: block; }
.chart .area { fill: var(--accent); opacity: .18; } .chart .line { fill: none; stroke: var(--accent); stroke-width: 1.5; }
.chart .line2 { fill: none; stroke: var(--warn); stroke-width: 1.5; } .chart .err { fill: var(--bad); }
.chart .dot { fill: var(--accent); } .chart .dot2 { fill: var(--warn); }
.lanes, .dlq { margin-bottom: 10px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
#lanes td:not(:first-child), #lanes th:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
#dlq td.err { max-width: 520px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#dlq td.id { font-family: ui-monospace, monospace; }
button { font: inherit; padding: 2px 10px; border: 1px solid var(--line); border-radius: 4px; background: var(--card); color: var(--fg); cursor: pointer; }
button:hover { border-color: var(--accent); } button:disabled { opacity: .5; cursor: default; }
form#login { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px; display: flex; gap: 10px; align-items: center; }
input { font: inherit; padding: 3px 6px; margin-left: 6px; }
`;

function serveFile(res: Parameters<Route>[1], file: string, type: string): void {
  if (!existsSync(file)) {
    res
      .writeHead(404, { "content-type": "text/plain; charset=utf-8" })
      .end("the operator page is not built: run npm run build (it compiles web/ into dist/web)\n");
    return;
  }
  const body = readFileSync(file);
  res
    .writeHead(200, {
      "content-type": type,
      "content-length": body.length,
      "cache-control": "no-cache",
      ...SECURITY_HEADERS,
    })
    .end(body);
}

/** `/`, `/page.css` and the compiled modules under `/web/`; every other path is not ours. */
export function pageRoutes(webDir: string = WEB_DIR): Route {
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const page = path === "/" || path === "/index.html";
    const mod = /^\/web\/([a-z0-9-]+\.js)$/.exec(path);
    if (!page && path !== "/page.css" && !mod) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET" }).end();
      return true;
    }
    if (page) {
      if (!existsSync(join(webDir, "main.js"))) {
        serveFile(res, join(webDir, "main.js"), "");
        return true;
      }
      res
        .writeHead(200, {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "no-cache",
          ...SECURITY_HEADERS,
        })
        .end(HTML);
    } else if (mod) serveFile(res, join(webDir, mod[1]!), "text/javascript; charset=utf-8");
    else
      res
        .writeHead(200, {
          "content-type": "text/css; charset=utf-8",
          "cache-control": "no-cache",
          ...SECURITY_HEADERS,
        })
        .end(CSS);
    return true;
  };
}
