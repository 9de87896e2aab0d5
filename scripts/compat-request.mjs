// What an unchanged client of the original tool does: `nats request openai_requests "<prompt>"`.
// (There is no natscli package here, so this is the same call with the nats.js client.)
import { connect } from "@nats-io/transport-node";

const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
try {
  const r = await nc.request("openai_requests", process.argv[2] ?? "Hello", {
    timeout: 60_000,
  });
  const err = r.headers?.get("Nats-Service-Error");
  console.log(err ? `error ${r.headers?.get("Nats-Service-Error-Code")}: ${err}` : r.string());
} finally {
  await nc.close();
}
