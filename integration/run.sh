#!/bin/bash
# integration/run.sh: the VM test bed. Builds (or reuses from the cache)
# the test-bed binaries and the VM image, builds the guard, boots a VM with
# real systemd, containerd and runsc, runs the selected scenarios inside it,
# and asserts on what they recorded (integration/*_test.go).
#
# Environment:
#   SCENARIOS                 scenarios by number or name, e.g. "1 2" or
#                             "red,green" (default: all)
#   RUNSC_GUARD_CACHE         cache directory (default /var/cache/runsc-guard)
#   RUNSC_GUARD_RUN_DIR       this run's files (default $RUNSC_GUARD_CACHE/run)
#   RUNSC_GUARD_ACCEL         auto (default), kvm or tcg
#   RUNSC_GUARD_VM_MEM        VM memory in MiB (default 4096)
#   RUNSC_GUARD_SKIP_VM=1     skip the VM suite (says so) instead of failing
#   RUNSC_GUARD_ALLOW_NO_GUARD=1  a guard that does not build skips, not fails,
#                             the scenarios that need it
#   RUNSC_GUARD_VERBOSE=1     go test -v style output
#   RUNSC_GUARD_V1_WORKLOADS  scenario 13's workloads, with each cgroup
#                             driver (default "alloc"; "doubler alloc" for
#                             both, about 9 min more)
#   RUNSC_GUARD_MANY_PODS     pods scenarios 11 and 12 create at once
#                             (default 10; 20 took 319 s under TCG)
set -euo pipefail

TB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$TB")
for lib in common host binaries image vm; do
	# shellcheck source=/dev/null
	. "$TB/lib/$lib.sh"
done

ALL_SCENARIOS="5 6 8 16 15 11 4 7 10 13" # grouped by containerd configuration
# Run by name or number only, left out of "all" to keep CI within its time
# budget: 1 and 2 (the demo's crictl RED/GREEN table; scenarios 7 and 10
# run its allocation cases on containerd 2.4 and 1.7, 15 the seed's
# manifests, doubler too, on this node under kubelet), 9 (install.sh on the seed's node
# with crictl: 15 does the same under kubelet), 3 (runsc variants behind
# the guard: 16 runs Debian's and the 2026 runsc behind it, 13 both on v1),
# 12 (11's fault table on
# containerd 2.4, about 8 minutes; 7 runs 2.4's ordinary pod life), 14
# (cost: it measures, it does not judge) and 17 (15's RED, install and
# GREEN on containerd 2.4, about 15 minutes).
EXTRA_SCENARIOS="1 2 3 9 12 14 17"
V1_SCENARIOS="13" # run in a second boot, on cgroup v1
CACHE=${RUNSC_GUARD_CACHE:-/var/cache/runsc-guard}
RUN_DIR=${RUNSC_GUARD_RUN_DIR:-$CACHE/run}
VM_MEM=${RUNSC_GUARD_VM_MEM:-4096}
SCENARIO_TIMEOUT=2700 # guest side, per scenario (15, real Kubernetes, is the slowest: 25 to 36 min measured)
BOOT_TIMEOUT=300     # boot to the first scenario, and poweroff

# scenarios: the selected scenario numbers, in run order. Names are
# accepted too: red green variants cgroupfs never-tighter transparency
# containerd2 move install containerd17 faults faults-containerd2
# cgroup-v1 cost kube resize kube-containerd2 (make demo asks for "red,green").
scenarios() {
	local s want=${SCENARIOS:-all} i
	local names=(all red green variants cgroupfs never-tighter transparency containerd2 move install containerd17 faults faults-containerd2 cgroup-v1 cost kube resize kube-containerd2)
	want=" ${want//,/ } "
	for i in "${!names[@]}"; do
		want=${want// ${names[$i]} / $i }
	done
	want=${want// 0 / $ALL_SCENARIOS }
	for s in $ALL_SCENARIOS; do
		[[ " $want " == *" $s "* ]] && echo -n "$s "
	done
	for s in $EXTRA_SCENARIOS; do
		[[ " $want " == *" $s "* ]] && echo -n "$s "
	done
	for s in $want; do
		[[ " $ALL_SCENARIOS $EXTRA_SCENARIOS " == *" $s "* ]] || die "unknown scenario '$s' (have: $ALL_SCENARIOS $EXTRA_SCENARIOS)"
	done
}

# stage_share: the per-run 9p share: guest scripts, guard binary and
# install.sh (laid out as in the repository, so install.sh finds the
# binary in bin/ by default), the scenario list and time limits; results/
# comes back.
stage_share() {
	local selected=$1
	rm -rf "$SHARE"
	mkdir -p "$SHARE/bin" "$SHARE/results"
	cp -a "$TB/guest" "$SHARE/guest"
	cp "$REPO/install.sh" "$SHARE/"
	[ "$GUARD_STATUS" = built ] && cp "$GUARD_BIN" "$SHARE/bin/"
	echo "$selected" > "$SHARE/scenarios"
	echo "$SCENARIO_TIMEOUT" > "$SHARE/scenario-timeout"
	# Knobs the guest scenarios read (guest/lib.sh sources this file).
	printf 'V1_WORKLOADS=%q\nMANY_PODS=%q\n' "${RUNSC_GUARD_V1_WORKLOADS:-alloc}" "${RUNSC_GUARD_MANY_PODS:-10}" > "$SHARE/knobs"
	echo "$GUEST_TIMEOUT" > "$SHARE/guest-timeout"
}

# guest_timings SCENARIOS: boot and per-scenario durations the guest recorded.
guest_timings() {
	local s
	printf '%-28s %4ss\n' "  boot to first scenario" "$(cut -d. -f1 "$SHARE/results/boot-uptime" 2> /dev/null)"
	for s in $1; do
		printf '%-28s %4ss\n' "  scenario $s" "$(sed -n 's/^seconds=//p' "$SHARE/results/$s/status" 2> /dev/null)"
	done
}

# print_samples: where the command outputs the scenarios kept for the
# README are (results/<scenario>/samples/).
print_samples() {
	local f
	for f in "$SHARE"/results/*/samples/*.txt; do
		[ -e "$f" ] || continue
		log "sample output: $f"
	done
}

# assert: compiles and runs the assertions over the guest's results; they
# print the report table.
assert() {
	local itest=$RUN_DIR/itest flags=()
	(cd "$REPO" && go test -c -tags integration -o "$itest" ./integration) ||
		die "the integration assertions do not compile"
	[ "${RUNSC_GUARD_VERBOSE:-}" = 1 ] && flags+=(-test.v)
	RUNSC_GUARD_RESULTS=$SHARE/results RUNSC_GUARD_SCENARIOS=$SELECTED \
		RUNSC_GUARD_GUARD=$GUARD_STATUS "$itest" "${flags[@]}"
}

# cleanup: nothing this run started may outlive it: qemu, background builds.
cleanup() {
	vm_stop
	local jobs
	jobs=$(jobs -p)
	[ -z "$jobs" ] || kill $jobs 2> /dev/null || true
}

main() {
	local why
	if [ "${RUNSC_GUARD_SKIP_VM:-}" = 1 ]; then
		log "!!! RUNSC_GUARD_SKIP_VM=1: the VM test bed is SKIPPED: nothing here was tested end to end !!!"
		exit 0
	fi
	if why=$(vm_impossible); [ -n "$why" ]; then
		printf '\n!!! THE VM TEST BED CANNOT RUN ON THIS MACHINE: %s\n' "$why" >&2
		printf '!!! (set RUNSC_GUARD_SKIP_VM=1 to skip it on purpose)\n\n' >&2
		exit 1
	fi
	SELECTED=$(scenarios)
	rm -rf "$RUN_DIR"
	mkdir -p "$RUN_DIR"
	TIMINGS=$RUN_DIR/timings.txt
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	log "scenarios: $SELECTED; run directory: $RUN_DIR"

	timed host-packages ensure_host_packages
	# The two builds are independent: binaries (CPU) beside the image
	# (mostly I/O and dpkg).
	tools_paths
	timed tools tools_ensure &
	local tools_pid=$!
	timed image image_ensure
	wait $tools_pid || die "building the test-bed binaries failed"
	timed guard-build guard_build

	# One boot per cgroup version; the v1 boot's results join the first's.
	local v2="" v1="" s
	for s in $SELECTED; do
		if [[ " $V1_SCENARIOS " == *" $s "* ]]; then v1+="$s "; else v2+="$s "; fi
	done
	RESULTS=$RUN_DIR/share/results
	[ -z "$v2" ] || boot share "$v2" ""
	[ -z "$v1" ] || boot share-v1 "$v1" "systemd.unified_cgroup_hierarchy=0"
	sed 's/^/  /' "$TIMINGS" >&2
	SHARE=$RUN_DIR/share
	print_samples
	assert
}

# boot NAME SCENARIOS APPEND: one VM boot running SCENARIOS with the share
# $RUN_DIR/NAME and APPEND on the kernel command line; its scenario results
# end up in $RESULTS.
boot() {
	local rc=0 s n
	SHARE=$RUN_DIR/$1
	n=$(wc -w <<< "$2")
	GUEST_TIMEOUT=$((SCENARIO_TIMEOUT * n + 120))
	# A hang guard within CI's 90 minutes, so a stuck run still reports.
	[ "$GUEST_TIMEOUT" -le 4800 ] || GUEST_TIMEOUT=4800
	stage_share "$2"
	VM_APPEND=$3 timed "vm-run-$1" vm_run "$SHARE" "$RUN_DIR" $((GUEST_TIMEOUT + BOOT_TIMEOUT)) || rc=$?
	cp "$RUN_DIR/console.log" "$SHARE/console.log" 2> /dev/null || true
	if [ ! -s "$SHARE/results/guest-rc" ]; then
		tail -n 40 "$RUN_DIR/console.log" >&2 || true
		die "the VM did not finish its run (qemu rc=$rc); console: $SHARE/console.log"
	fi
	guest_timings "$2" >> "$TIMINGS"
	if [ "$SHARE/results" != "$RESULTS" ]; then
		mkdir -p "$RESULTS"
		for s in $2; do
			rm -rf "${RESULTS:?}/$s"
			cp -a "$SHARE/results/$s" "$RESULTS/$s"
			cp "$SHARE/results/journal.txt" "$RESULTS/$s/journal.txt" 2> /dev/null || true
		done
	fi
}

main "$@"
