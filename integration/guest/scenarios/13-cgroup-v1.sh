# shellcheck shell=bash
# Scenario 13, cgroup v1 (its own boot, systemd.unified_cgroup_hierarchy=0;
# integration/run.sh): containerd 1.6, the seed's two workloads on the stock
# shim and behind the guard (the python allocator; the bash doubler too
# with RUNSC_GUARD_V1_WORKLOADS="doubler alloc"), Debian's runsc and the
# 2026 runsc, with the
# systemd driver (pod slice with MemoryMax) and the cgroupfs driver
# (/kubepods/burstable/pod<uid> with memory.limit_in_bytes).
#
# Every runsc release takes a systemd cgroupsPath for a directory under its
# own cgroup on v1, systemd-cgroup or not (docs/upstream.md#v1): the stock
# sandboxes land in /system.slice/containerd.service/..., RED. Behind the
# guard runsc is handed the directory of a scope the guard started under
# the pod slice: GREEN with no move. The 2026 runsc with systemd-cgroup on
# (guard-new-sd) shows the guard turning the flag off for the absolute path.
# audit runs once each pod is created, before its workload starts (AT-RISK on
# the stock shim, OK behind the guard; an OOM-killed sandbox is gone by the
# time its workload ends).
scenario() {
	[ "$CGV" = 1 ] || die "scenario 13 needs the cgroup v1 boot (CGV=$CGV)"
	say "cgroup v1: $(grep -c . /proc/cgroups) controllers, $(stat -fc %T $CG/memory)"
	use_containerd 1.6 systemd
	local wl cmd r
	for wl in ${V1_WORKLOADS:-alloc}; do
		cmd=$WL_DOUBLER
		[ $wl = alloc ] && cmd=$WL_ALLOC
		for r in deb new; do
			run_workload "sd-$wl-stock-$r" "stock-$r" "$cmd" before_start=audit_running
			[ -x "$GUARD_BIN" ] && run_workload "sd-$wl-guard-$r" "guard-$r" "$cmd" before_start=audit_running
		done
	done
	[ -x "$GUARD_BIN" ] && run_workload sd-alloc-guard-new-sd guard-new-sd "$WL_ALLOC" before_start=audit_running
	use_containerd 1.6 cgroupfs
	for wl in ${V1_WORKLOADS:-alloc}; do
		cmd=$WL_DOUBLER
		[ $wl = alloc ] && cmd=$WL_ALLOC
		for r in deb new; do
			run_workload "fs-$wl-stock-$r" "stock-$r" "$cmd" driver=cgroupfs before_start=audit_running
			[ -x "$GUARD_BIN" ] && run_workload "fs-$wl-guard-$r" "guard-$r" "$cmd" driver=cgroupfs before_start=audit_running
		done
	done
}

# audit_running: the guard's audit of the running pod (fact audit_verdict,
# and its reasons).
audit_running() {
	"$GUARD_BIN" audit --json > "$CASE_DIR/audit.json" 2> "$CASE_DIR/audit.err"
	fact audit_verdict "$(jq -r --arg id "$POD_ID" '.sandboxes[]? | select(.container_id == $id) | .verdict' "$CASE_DIR/audit.json" 2> /dev/null)"
	fact audit_error "$(head -c 300 "$CASE_DIR/audit.err")"
	fact audit_reasons "$(jq -r --arg id "$POD_ID" '.sandboxes[]? | select(.container_id == $id) | (.reasons // []) | join("; ")' "$CASE_DIR/audit.json" 2> /dev/null | cut -c1-400)"
}
