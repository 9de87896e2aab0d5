#!/usr/bin/env bash
# Starts a local JetStream nats-server (store in .data/), the local OpenAI-compatible
# test double (unless OPENAI_API_KEY is set), applies the streams and serves.
# With --demo: shows one round trip of each kind, then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT=${NATS_PORT:-4222}
DEV_OPENAI_PORT=${DEV_OPENAI_PORT:-8787}
HTTP_PORT=${HTTP_PORT:-9464}
export NATS_URL="nats://127.0.0.1:${NATS_PORT}"
CLI="node dist/cli/main.js"
DEMO=${1:-}
mkdir -p .data
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for <description> <command...>: poll a readiness check, bounded
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; exit 1
}

if (exec 3<>/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null; then
  echo "== using the nats-server already listening on port $NATS_PORT"
else
  # make exports NATS_SERVER_BIN (scripts/nats-server.sh: >= 2.10, else Debian's fetched into .tools/).
  NATS_SERVER=${NATS_SERVER_BIN:-$(scripts/nats-server.sh)}
  echo "== starting $("$NATS_SERVER" --version) (JetStream, store in .data/jetstream) on port $NATS_PORT"
  "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$PWD/.data/jetstream" >.data/nats-server.log 2>&1 &
  pids+=($!)
  wait_for "nats-server" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
fi

if [ -n "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_BASE_URL:-}" ]; then
  echo "== OPENAI_API_KEY is set: using the real OpenAI API"
else
  if [ -z "${OPENAI_BASE_URL:-}" ]; then
    echo "== starting the local OpenAI-compatible TEST DOUBLE on port $DEV_OPENAI_PORT (not OpenAI; set OPENAI_API_KEY for the real API)"
    node dist/dev-openai/main.js --port "$DEV_OPENAI_PORT" --latency "${DEV_OPENAI_LATENCY:-150}" --stream-delay 40 >/dev/null 2>.data/dev-openai.log &
    pids+=($!)
    export OPENAI_BASE_URL="http://127.0.0.1:${DEV_OPENAI_PORT}/v1"
    wait_for "dev-openai" bash -c "exec 3<>/dev/tcp/127.0.0.1/$DEV_OPENAI_PORT"
  fi
fi

echo "== applying streams/*.json"
$CLI streams apply

if [ "$DEMO" != "--demo" ]; then
  echo "== serving (Ctrl-C stops; operator page on http://127.0.0.1:$HTTP_PORT/, metrics on http://127.0.0.1:$HTTP_PORT/metrics)"
  $CLI serve --http-port "$HTTP_PORT" ${SERVE_ARGS:-} &
  pids+=($!)
  wait "${pids[-1]}"
  exit $?
fi

$CLI serve --http-port "$HTTP_PORT" --log-level error &
pids+=($!)
wait_for "the proxy" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT"

echo
echo "== 1. compat request-reply on the core subject openai_requests (what the original tool's clients do)"
node scripts/compat-request.mjs "List the last 10 presidents"
echo
echo "== 2. durable request (work queue + Reply-To inbox): nats-openai-proxy request"
$CLI request "What is JetStream?"
echo
echo "== 3. fire-and-forget: submit prints the id; result --wait reads it from OPENAI_RESULTS"
id=$($CLI submit "Summarise the plot of Hamlet in one line")
echo "submitted: $id"
$CLI result "$id" --wait --timeout 30000
echo
echo "== 4. JSON request, streamed token by token"
echo '{"messages":[{"role":"user","content":"Stream this sentence back word by word"}]}' >.data/demo-stream.json
$CLI request --json .data/demo-stream.json --stream
echo
echo "== 5. a bad request is answered with an error and dead-lettered"
echo '{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}' >.data/demo-bad.json
$CLI request --json .data/demo-bad.json || true
$CLI dlq list || true
echo
echo "== 6. the operator page on http://127.0.0.1:$HTTP_PORT/ and its JSON API (GET /api/overview)"
node -e '
const base = process.argv[1];
(async () => {
  const page = await fetch(base + "/");
  const o = await (await fetch(base + "/api/overview")).json();
  console.log("GET / ->", page.status, page.headers.get("content-type"));
  console.log(JSON.stringify({ queue: o.queue, worker: o.worker, dlq: o.dlq, last_15_min: o.activity.total }));
})().catch((e) => { console.error(e.message); process.exit(1); });
' "http://127.0.0.1:$HTTP_PORT"
echo
echo "== streams"
$CLI streams info
echo
echo "demo finished: everything above went through JetStream; stopping."
