#!/bin/bash
# integration/demo.sh: the README's first command. On a fresh Debian 12
# machine (root; Go is fetched when missing, integration/ensure-go.sh) it
# installs what it needs, builds the guard,
# the test-bed binaries and the VM image (cached in /var/cache/runsc-guard),
# boots the VM and prints the RED/GREEN table of the seed's incident:
# scenario 1, the stock runsc shim (the pod escapes its 256Mi limit), and
# scenario 2, the same node behind runsc-guard (OOM-killed in its pod).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v make > /dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make > /dev/null
fi
# shellcheck source=integration/ensure-go.sh
. integration/ensure-go.sh
ensure_go
exec make demo
