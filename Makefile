# nats-openai-proxy — every target installs what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NATS_PORT ?= 4222
DEV_OPENAI_PORT ?= 8787
HTTP_PORT ?= 9464
export NATS_URL ?= nats://127.0.0.1:$(NATS_PORT)
CLI := node dist/cli/main.js
SRC := $(shell find src -name '*.ts' 2>/dev/null) tsconfig.json tsconfig.build.json

.PHONY: help setup deps nats-server redis-server build run demo test lint format streams-apply streams-info \
        streams-purge dlq-list dlq-replay dlq-purge bench throughput soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/' | expand -t 16

setup: deps nats-server build ## install npm deps and nats-server, build

deps: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

nats-server: ## install nats-server from Debian if missing
	@command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || { \
	  echo "installing nats-server (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }

build: dist/.built
dist/.built: node_modules/.installed $(SRC)
	npm run build
	@touch $@

run: setup ## local JetStream (.data/), streams applied, proxy serving (local test double unless OPENAI_API_KEY)
	NATS_PORT=$(NATS_PORT) DEV_OPENAI_PORT=$(DEV_OPENAI_PORT) HTTP_PORT=$(HTTP_PORT) scripts/run.sh

demo: setup ## start everything, show a round trip of each kind, stop
	NATS_PORT=$(NATS_PORT) DEV_OPENAI_PORT=$(DEV_OPENAI_PORT) HTTP_PORT=$(HTTP_PORT) scripts/run.sh --demo

test: deps nats-server ## unit and integration tests (real nats-server, local OpenAI-compatible server)
	npx vitest run

lint: deps ## eslint + prettier + tsc --noEmit
	npx eslint .
	npx prettier --check .
	npx tsc --noEmit -p .

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

redis-server: ## install redis-server from Debian if missing (the BullMQ baseline of make bench)
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

bench: setup redis-server ## benchmark suite (bounded; prints ratios to baselines measured in the same run), then the 2-minute rate-limit run
	node --import tsx bench/run.ts $(ARGS)
	node --import tsx scripts/bench-ratelimit.ts $(RATE_ARGS)

throughput: setup ## requests/s through one proxy (default 200 ms latency, concurrency 64)
	node --import tsx scripts/throughput.ts $(ARGS)

soak: setup ## bounded soak run mixing load, faults, kills and a server restart (not in CI)
	node --import tsx scripts/soak.ts $(ARGS)

clean: ## remove build output and local data
	rm -rf dist .data coverage
