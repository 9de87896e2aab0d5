/**
 * Calls to the proxy's /api with the operator's token, kept in sessionStorage (this tab
 * only, gone when it closes) once asked for.
 */

const KEY = "nats-openai-proxy.token";

/** The API wants a token, or refused the one given. */
export class Unauthorized extends Error {
  override readonly name = "Unauthorized";
}

/** Any other refusal or failure, with the API's own message. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function savedToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

/** One API call; resolves to the parsed JSON answer. */
export async function call<T>(method: "GET" | "POST" | "DELETE", path: string): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  const token = savedToken();
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
  const body = (await r.json().catch(() => ({}))) as { error?: string };
  if (r.status === 401) throw new Unauthorized(body.error ?? "token needed");
  if (!r.ok) throw new ApiError(r.status, body.error ?? `${r.status} ${r.statusText}`);
  return body as T;
}
