#!/bin/bash
# integration/check.sh: the project's whole test, as the README's test
# command and CI (.ci/run) run it: the unit tests, then the VM test bed
# with every scenario. run.sh installs what the VM part needs on a fresh
# Debian 12 machine (as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[check %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# shellcheck source=integration/ensure-go.sh
. integration/ensure-go.sh
ensure_go
if ! command -v make > /dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make > /dev/null
fi

start=$SECONDS
if grep -q '^test:' Makefile 2> /dev/null; then
	log "unit tests: make test"
	make test
else
	log "unit tests: go test ./..."
	go test ./...
fi
log "unit tests passed in $((SECONDS - start))s"

start=$SECONDS
log "VM test bed: integration/run.sh (all scenarios)"
SCENARIOS=all ./integration/run.sh
log "VM test bed passed in $((SECONDS - start))s"
