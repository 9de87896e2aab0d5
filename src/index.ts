/**
 * The package's library entry: the typed client, the wire contract and the server
 * pieces for embedding.
 */
import { connect, type ConnectionOptions } from "@nats-io/transport-node";
import {
  createClient,
  DEFAULT_NAMES,
  type ClientNames,
  type ProxyClient,
} from "./client/client.js";

export {
  ProxyClient,
  ClientError,
  RequestTimeoutError,
  createClient,
  DEFAULT_NAMES,
} from "./client/client.js";
export type {
  ClientNames,
  RequestInput,
  SubmitOptions,
  Submitted,
  RequestOptions,
} from "./client/client.js";
export { H as Headers, STREAM_DELTA, STREAM_DONE } from "./protocol/headers.js";
export { Code, RequestError } from "./protocol/codes.js";
export { STREAM_RESTART } from "./protocol/headers.js";
export type { StreamOptions } from "./client/client.js";
export { ResumeError } from "./client/resume.js";
export type { ResumeOptions } from "./client/resume.js";
export { isStreamRestart, chunkText } from "./protocol/stream.js";
export type { StreamRestart } from "./protocol/stream.js";
export { cacheKey, parseCacheTtl } from "./protocol/cache.js";
export { readResult } from "./protocol/result.js";
export type { ResultView, CompletionLike, Usage } from "./protocol/result.js";
export { newId, isValidId } from "./protocol/subjects.js";
export { startProxy } from "./main.js";
export type { Proxy } from "./main.js";
export { loadConfig } from "./config/load.js";

/**
 * Connects to NATS and returns a client.
 * @example const c = await connectClient({ servers: "nats://127.0.0.1:4222" });
 */
export async function connectClient(
  opts: ConnectionOptions & { names?: Partial<ClientNames> } = {},
): Promise<ProxyClient> {
  const { names, ...connOpts } = opts;
  const nc = await connect(connOpts);
  return createClient(nc, { ...DEFAULT_NAMES, ...names });
}
