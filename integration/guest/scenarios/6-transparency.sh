# shellcheck shell=bash
# Scenario 6: transparency. The same ordinary pod life on the stock shim
# and behind the guard (2026 runsc, which needs no fix): run, exec, logs,
# a non-zero exit, stop, remove, and an OOM kill. Exit codes, reasons and
# outputs must be the same, and nothing may be left running afterwards.
# Also measures what the guard costs: the resident memory of the guard and
# of the runsc shims serving a pod.
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	local h
	for h in stock-new guard-new; do
		lifecycle "life-${h%%-*}" "$h"
		run_workload "oom-${h%%-*}" "$h" "$WL_ALLOC"
	done
	begin_case leftovers
	fact guard_processes "$(pgrep -c -f containerd-shim-runsc-guard-v1)"
	fact runsc_processes "$(pgrep -c -f 'runsc')"
	fact shim_processes "$(pgrep -c -f containerd-shim-runsc)"
	end_case
}

# lifecycle CASE HANDLER: one pod, one long-running container and one that
# exits 7; exec with output and exit code, logs, stop, remove.
lifecycle() {
	begin_case "$1"
	case_facts "$2" systemd
	POD_UID=$(cat /proc/sys/kernel/random/uuid)
	pod_cgroup_systemd "$POD_UID" $((512 * MiB))
	fact pod_cgroup "$POD_CG"
	run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $((512 * MiB))}" || { remove_pod; end_case; return; }
	record_sandbox
	record_guard
	create_ctr main $LIMIT 'echo hello-from-main; exec sleep 3600' && start_ctr "$CTR_ID"
	local main=$CTR_ID out
	sleep 2
	# crictl exec exits 1 for any non-zero exit and names the code on stderr.
	out=$(crictl exec "$main" /bin/sh -c 'echo exec-ok; exit 3' 2> "$CASE_DIR/exec.err")
	fact exec_rc $?
	fact exec_output "$out"
	fact exec_exit_code "$(sed -n 's/.*command terminated with exit code \([0-9]*\).*/\1/p' "$CASE_DIR/exec.err")"
	fact logs "$(crictl logs "$main" 2>&1 | tr '\n' ' ')"
	# Two containers (pause + main) running, no other pod on the node.
	record_shim_rss
	crictl stop -t 10 "$main" > /dev/null 2>&1
	fact stopped_state "$(ctr_field "$main" .status.state)"
	fact stopped_exit_code "$(ctr_field "$main" .status.exitCode)"
	fact stopped_reason "$(ctr_field "$main" .status.reason)"
	if create_ctr seven $LIMIT 'echo bye; exit 7' && start_ctr "$CTR_ID"; then
		wait_ctr "$CTR_ID" 120
		fact seven_exit_code "$(ctr_field "$CTR_ID" .status.exitCode)"
		fact seven_reason "$(ctr_field "$CTR_ID" .status.reason)"
		fact seven_logs "$(crictl logs "$CTR_ID" 2>&1 | tr '\n' ' ')"
	fi
	crictl rm "$main" "$CTR_ID" > /dev/null 2>&1
	fact rm_rc $?
	record_guard
	remove_pod
	end_case
}
