#!/bin/bash
# integration/demo.sh: the README's first command. On a fresh Debian 12
# machine (root, Go on PATH) it installs what it needs, builds the guard,
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
command -v go > /dev/null || {
	echo "demo.sh: Go (>= the version in go.mod) must be on PATH" >&2
	exit 1
}
exec make demo
