# shellcheck shell=bash
# Scenario 16, resize: a running pod resized in place the way kubelet does
# it (KEP-1287): first the pod slice over D-Bus (SetUnitProperties,
# MemoryMax and CPUQuotaPerSecUSec), then UpdateContainerResources of the
# app container (crictl update). Each case, on the stock shim and behind
# the guard, on Debian's runsc and on the 2026 runsc, in one boot:
#   1. a pod of 256Mi and half a CPU, one container sleeping;
#   2. raised to 512Mi and one CPU; the sandbox's cgroup is read back;
#   3. an exec allocates 400Mi: it must survive at 512Mi;
#   4. lowered to 256Mi again (crictl update, then the slice, kubelet's
#      order for a cut), an exec allocates 400Mi: the pod must be killed
#      at its new limit.
# Debian's runsc is run with systemd-cgroup on (stock: the node configured
# right; the guard adds it): it applies the spec's limit, which the guard
# writes and the stock shim does not, to its sandbox scope.
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	local h
	for h in stock-deb-sd guard-deb stock-new guard-new; do
		resize_case "resize-$h" "$h"
	done
}

# set_pod_limits MEMORY CPU_PER_SEC_USEC: what kubelet's systemd cgroup
# manager does to the pod slice (SetUnitProperties, runtime).
set_pod_limits() {
	busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
		org.freedesktop.systemd1.Manager SetUnitProperties 'sba(sv)' "$POD_UNIT" true 2 \
		MemoryMax t "$1" CPUQuotaPerSecUSec t "$2" > /dev/null
}

# alloc_exec KEY: an exec in the app container allocating 400Mi (busybox
# dd touches every page of its buffer); facts KEY_rc, KEY_output and the
# container's state after it.
alloc_exec() {
	local out
	out=$(timeout 180 crictl exec "$CTR_ID" /bin/sh -c \
		'dd if=/dev/zero of=/dev/null bs=419430400 count=1 2>/dev/null && echo ALLOC-OK' 2> "$CASE_DIR/$1.err")
	fact "$1_rc" $?
	fact "$1_output" "$out$(tail -c 200 "$CASE_DIR/$1.err" | tr '\n' ' ')"
	sleep 2
	fact "$1_state" "$(ctr_field "$CTR_ID" .status.state)"
	fact "$1_pod_peak" "$(cat "$(cg_mem "$POD_CG" peak)" 2> /dev/null)"
	fact "$1_pod_oom_kill" "$(awk '$1 == "oom_kill" {print $2}' "$(cg_mem "$POD_CG" events)" 2> /dev/null)"
}

# ctr_not_running CID: the container is no longer CONTAINER_RUNNING.
ctr_not_running() { [ "$(ctr_field "$1" .status.state)" != CONTAINER_RUNNING ]; }

# limits_of KEY: the pod slice's and the sandbox cgroup's memory.max and
# cpu.max now.
limits_of() {
	fact "$1_pod_memory_max" "$(cat "$CG$POD_CG/memory.max" 2> /dev/null)"
	fact "$1_pod_cpu_max" "$(cat "$CG$POD_CG/cpu.max" 2> /dev/null)"
	fact "$1_sandbox_memory_max" "$(cat "$CG$SANDBOX_CG/memory.max" 2> /dev/null)"
	fact "$1_sandbox_cpu_max" "$(cat "$CG$SANDBOX_CG/cpu.max" 2> /dev/null)"
}

# resize_case CASE HANDLER
resize_case() {
	begin_case "$1"
	case_facts "$2" systemd
	POD_UID=$(cat /proc/sys/kernel/random/uuid)
	pod_cgroup_systemd "$POD_UID" "$LIMIT"
	set_pod_limits "$LIMIT" 500000 || die "SetUnitProperties on $POD_UNIT failed"
	fact pod_cgroup "$POD_CG"
	if ! run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $LIMIT, \"cpu_quota\": 50000, \"cpu_period\": 100000}"; then
		remove_pod
		end_case
		return
	fi
	record_sandbox
	record_guard
	if ! create_ctr app "$LIMIT" 'echo ready; exec sleep 3600' || ! start_ctr "$CTR_ID"; then
		remove_pod
		end_case
		return
	fi
	sleep 2
	limits_of before

	set_pod_limits $((512 * MiB)) 1000000
	fact raise_slice_rc $?
	crictl update --memory $((512 * MiB)) --cpu-quota 100000 --cpu-period 100000 "$CTR_ID" > /dev/null 2> "$CASE_DIR/update-raise.err"
	fact update_raise_rc $?
	fact update_raise_error "$(err_summary "$CASE_DIR/update-raise.err")"
	limits_of raised
	record_guard
	[ -s "$CASE_DIR/runsc-guard.json" ] &&
		fact guard_follows "$(jq -c '[.follows[]? | {from: .from.memory_bytes, to: .to.memory_bytes, written, total_memory}]' "$CASE_DIR/runsc-guard.json")"
	audit_case audit-raised
	alloc_exec alloc_raised

	if [ "$(ctr_field "$CTR_ID" .status.state)" = CONTAINER_RUNNING ]; then
		# A cut: kubelet updates the containers first, then the pod
		# cgroup (and stops before it when the update failed, as with
		# Debian's runsc: the test bed lowers the slice anyway, as an
		# operator's systemctl set-property would).
		crictl update --memory "$LIMIT" --cpu-quota 50000 --cpu-period 100000 "$CTR_ID" > /dev/null 2> "$CASE_DIR/update-lower.err"
		fact update_lower_rc $?
		set_pod_limits "$LIMIT" 500000
		fact lower_slice_rc $?
		sleep 4 # the guard follows again 2 s after an Update
		fact lowered_state "$(ctr_field "$CTR_ID" .status.state)"
		limits_of lowered
		record_guard
		if [ "$(ctr_field "$CTR_ID" .status.state)" = CONTAINER_RUNNING ]; then
			alloc_exec alloc_lowered
			# A sentry killed at the pod's limit ends the exec at once
			# (its control socket closes), but the shim's report of the
			# container's exit can take longer than alloc_exec's 2 s:
			# CI saw the stock 2026 shim still RUNNING then. Wait for
			# it, so final_state is the outcome and not the race.
			local w0=$SECONDS
			wait_until 30 ctr_not_running "$CTR_ID"
			fact lowered_exit_wait $((SECONDS - w0))
		fi
	fi
	fact final_state "$(ctr_field "$CTR_ID" .status.state)"
	fact final_reason "$(ctr_field "$CTR_ID" .status.reason)"
	journalctl -q --no-pager -u containerd --since "@$CASE_START" | grep -i 'resize followed' > "$CASE_DIR/guard-follow-log.txt"
	fact follow_log_lines "$(wc -l < "$CASE_DIR/guard-follow-log.txt")"
	end_workload
}
