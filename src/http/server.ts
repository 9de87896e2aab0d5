/**
 * The HTTP side: Prometheus `/metrics`, `/healthz` (process alive) and `/readyz`
 * (connected to NATS, consumer bound, breaker closed).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface Readiness {
  ready(): { ready: boolean; checks: Record<string, boolean> };
}

/** Handles a request it owns (true), or leaves it to the next one (false). */
export type Route = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface HttpServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the HTTP server; resolves once it listens. */
export async function startHttp(
  host: string,
  port: number,
  registry: Registry,
  readiness: Readiness & { routes?: readonly Route[] },
): Promise<HttpServer> {
  const routes = readiness.routes ?? [];
  const server: Server = createServer((req, res) => {
    // The operator page and its API first; the paths below are never theirs.
    for (const r of routes) if (r(req, res)) return;
    const url = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") {
      res.writeHead(405).end();
      return;
    }
    if (url === "/metrics") {
      registry
        .metrics()
        .then((text) => {
          res.writeHead(200, { "content-type": registry.contentType }).end(text);
        })
        .catch((e: unknown) => {
          res.writeHead(500).end(String(e));
        });
      return;
    }
    if (url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
      return;
    }
    if (url === "/readyz") {
      const r = readiness.ready();
      res
        .writeHead(r.ready ? 200 : 503, { "content-type": "application/json" })
        .end(JSON.stringify({ status: r.ready ? "ready" : "not ready", ...r.checks }));
      return;
    }
    res.writeHead(404).end();
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
