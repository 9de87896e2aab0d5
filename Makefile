# nats-openai-proxy — every target installs what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NATS_PORT ?= 4222
DEV_OPENAI_PORT ?= 8787
HTTP_PORT ?= 9464
export NATS_URL ?= nats://127.0.0.1:$(NATS_PORT)
CLI := node dist/cli/main.js
SRC := $(shell find src web -name '*.ts' 2>/dev/null) tsconfig.json tsconfig.build.json web/tsconfig.json

.PHONY: help setup deps nats-server redis-server build run demo test test-integration lint format \
        streams-apply streams-info streams-purge dlq-list dlq-replay dlq-purge bench bench-streams throughput soak \
        chromium screenshot clean distclean

# nats-server >= 2.10: NATS_SERVER_BIN, else PATH or /usr/sbin, else Debian's package unpacked
# into .tools/ (NATS_SERVER_SUITE, default sid; =trixie for the oldest supported, 2.10.x).
# scripts/nats-server.sh decides; it runs once, and only when a target below needs a server.
NATS_SERVER_BIN_GIVEN := $(NATS_SERVER_BIN)
nats_server_env := $(if $(NATS_SERVER_SUITE),NATS_SERVER_SUITE='$(NATS_SERVER_SUITE)') \
                   $(if $(NATS_SERVER_BIN_GIVEN),NATS_SERVER_BIN='$(NATS_SERVER_BIN_GIVEN)')
nats_server_bin = $(eval nats_server_bin := $(or $(shell $(nats_server_env) scripts/nats-server.sh),\
  $(error no usable nats-server (2.10 or newer), see above)))$(nats_server_bin)
# Exported to the recipes (and so to the test helper and scripts/run.sh) of these targets only.
setup run demo test test-integration screenshot bench throughput soak: override export NATS_SERVER_BIN = $(nats_server_bin)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/' | expand -t 18

setup: deps nats-server build ## npm deps, nats-server (found or fetched into .tools/), build

deps: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

nats-server: ## find nats-server >= 2.10, or fetch Debian's newest into .tools/ (NATS_SERVER_SUITE=trixie: oldest supported)
	@bin='$(nats_server_bin)'; echo "nats-server $$("$$bin" --version | sed 's/^nats-server: //'): $$bin"

build: dist/.built
dist/.built: node_modules/.installed $(SRC)
	npm run build
	@touch $@

run: setup ## local JetStream (.data/), streams applied, proxy serving (local test double unless OPENAI_API_KEY)
	NATS_PORT=$(NATS_PORT) DEV_OPENAI_PORT=$(DEV_OPENAI_PORT) HTTP_PORT=$(HTTP_PORT) scripts/run.sh

demo: setup ## start everything, show a round trip of each kind, stop
	NATS_PORT=$(NATS_PORT) DEV_OPENAI_PORT=$(DEV_OPENAI_PORT) HTTP_PORT=$(HTTP_PORT) scripts/run.sh --demo

test: deps nats-server chromium ## unit and integration tests (real nats-server, local OpenAI-compatible server)
	npx vitest run

test-integration: deps nats-server ## integration tests only (CI runs them on the oldest supported nats-server too)
	npx vitest run test/integration

lint: deps ## eslint + prettier + tsc --noEmit
	npx eslint .
	npx prettier --check .
	npx tsc --noEmit -p .
	npx tsc --noEmit -p web

format: deps
	npx prettier --write .

streams-apply: build ## create/update streams and consumer from streams/*.json (idempotent)
	$(CLI) streams apply $(ARGS)

streams-info: build ## state of the streams and the consumer
	$(CLI) streams info $(ARGS)

streams-purge: build ## empty the request queue (STREAM=name for another)
	$(CLI) streams purge $(STREAM) $(ARGS)

dlq-list: build ## list dead letters
	$(CLI) dlq list $(ARGS)

dlq-replay: build ## replay dead letters (ID=<id>, default all)
	$(CLI) dlq replay $(if $(ID),$(ID),--all) $(ARGS)

dlq-purge: build ## delete all dead letters
	$(CLI) dlq purge $(ARGS)

chromium: ## install Debian's chromium if missing (the operator page's browser tests drive it)
	@scripts/chromium.sh >/dev/null

screenshot: deps nats-server chromium ## rewrite docs/operator-page.png from the browser test
	UPDATE_SCREENSHOT=1 npx vitest run test/browser

redis-server: ## install redis-server from Debian if missing (the BullMQ baseline of make bench)
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

bench: setup redis-server ## benchmark suite (bounded; prints ratios to baselines measured in the same run), then the 2-minute rate-limit run
	node --import tsx bench/run.ts $(ARGS)
	node --import tsx bench/streams-cache.ts $(STREAM_ARGS)
	node --import tsx scripts/bench-ratelimit.ts $(RATE_ARGS)

bench-streams: setup ## what storing streamed deltas and the response cache cost (tokens/s with and without OPENAI_STREAMS; cache hit vs direct call)
	node --import tsx bench/streams-cache.ts $(STREAM_ARGS)

throughput: setup ## requests/s through one proxy (default 200 ms latency, concurrency 64)
	node --import tsx scripts/throughput.ts $(ARGS)

soak: setup ## bounded soak run mixing load, faults, kills and a server restart (not in CI)
	node --import tsx scripts/soak.ts $(ARGS)

clean: ## remove build output and local data (keeps the nats-server in .tools/)
	rm -rf dist .data coverage

distclean: clean ## also remove .tools/ (fetched nats-servers)
	rm -rf .tools
