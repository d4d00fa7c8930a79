# shellcheck shell=bash
# Host prerequisites: can this machine run the test bed at all, and the
# Debian packages it needs.

HOST_PACKAGES="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs"

# vm_impossible: prints why this machine cannot run the VM, if it cannot.
vm_impossible() {
	[ "$(uname -m)" = x86_64 ] || { echo "the test bed needs an x86_64 host, this is $(uname -m)"; return; }
	[ "$(id -u)" = 0 ] || { echo "the test bed needs root (apt-get, mmdebstrap --mode=root)"; return; }
	command -v apt-get > /dev/null || { echo "the test bed needs a Debian host (apt-get)"; return; }
	command -v go > /dev/null || { echo "the test bed needs Go on PATH"; return; }
	local free_mb
	mkdir -p "$CACHE"
	free_mb=$(df -Pm "$CACHE" | awk 'NR == 2 {print $4}')
	[ "$free_mb" -ge 8000 ] || { echo "the test bed needs 8 GB free under $CACHE, has ${free_mb} MB"; return; }
	return 0
}

# ensure_host_packages: installs the Debian packages that are missing.
ensure_host_packages() {
	local p missing=()
	for p in $HOST_PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} = 0 ] && return
	log "installing host packages: ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" > "$RUN_DIR/apt.log" 2>&1 ||
		die "apt-get install ${missing[*]} failed (log: $RUN_DIR/apt.log)"
	qemu-system-x86_64 -accel help 2> /dev/null | grep -q tcg ||
		die "qemu-system-x86_64 has no TCG accelerator: cannot run the VM"
}

# guard_build: builds the guard into $REPO/bin; sets GUARD_BIN and
# GUARD_STATUS ("built" or why not). A guard that does not build yet
# still lets the scenarios that do not need it run.
guard_build() {
	GUARD_BIN=$REPO/bin/containerd-shim-runsc-guard-v1
	local log=$RUN_DIR/guard-build.log
	rm -f "$GUARD_BIN"
	if grep -q '^build:' "$REPO/Makefile" 2> /dev/null; then
		make -C "$REPO" build > "$log" 2>&1
	else
		(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' \
			-o "$GUARD_BIN" ./cmd/containerd-shim-runsc-guard-v1) > "$log" 2>&1
	fi
	if [ -x "$GUARD_BIN" ]; then
		GUARD_STATUS=built
		log "guard: built $GUARD_BIN"
	else
		GUARD_STATUS="the guard did not build: $(grep -v '^$' "$log" | tail -n1 | cut -c1-200)"
		log "WARNING: $GUARD_STATUS (log: $log); only scenarios without the guard can pass"
	fi
}
