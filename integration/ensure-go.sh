#!/bin/bash
# integration/ensure-go.sh: sourced by demo.sh and check.sh. Makes a Go at
# least as new as go.mod's available on PATH. On a fresh Debian 12 machine
# without one, it installs Debian's golang-go (1.19: too old to build this
# module, and older than Go 1.21's automatic toolchain switch) and uses it
# only to download the toolchain go.mod names, which the Go module proxy
# serves as the module golang.org/toolchain, into /opt/go<version>.

ensure_go() {
	local want have=none
	want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
	export PATH=$PATH:/usr/local/go/bin
	for d in "/opt/go$want/bin" "$(go env GOROOT 2> /dev/null)/bin"; do
		[ -x "$d/go" ] || continue
		have=$("$d/go" env GOVERSION | sed 's/^go//')
		if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ]; then
			unset GOROOT
			export PATH="$d:$PATH"
			return 0
		fi
	done
	echo "ensure-go: need Go >= $want (have: $have); fetching go$want through the Go module proxy" >&2
	if ! command -v go > /dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go ca-certificates > /dev/null
	fi
	local mod dir tmp
	mod="golang.org/toolchain@v0.0.1-go$want.linux-$(dpkg --print-architecture)"
	tmp=$(mktemp -d)
	dir=$(cd "$tmp" && GOPATH=$tmp GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$mod" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$dir" ] || [ ! -f "$dir/bin/go" ]; then
		echo "ensure-go: could not download $mod" >&2
		return 1
	fi
	# Module zips keep no file modes: make the tools executable again.
	rm -rf "/opt/go$want"
	cp -r "$dir" "/opt/go$want"
	chmod -R u+w "$tmp" "/opt/go$want"
	rm -rf "$tmp"
	chmod +x "/opt/go$want"/bin/* "/opt/go$want"/pkg/tool/*/*
	unset GOROOT
	export PATH="/opt/go$want/bin:$PATH"
	go version >&2
}
