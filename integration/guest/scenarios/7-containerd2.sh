# shellcheck shell=bash
# Scenario 7: scenarios 1 and 2 on containerd 2.4.2 (config version 3,
# stock shim used directly; testbed-notes §12).
scenario() {
	use_containerd 2.4 systemd
	run_workload red-doubler stock-deb "$WL_DOUBLER"
	run_workload red-alloc stock-deb "$WL_ALLOC"
	requires_guard
	run_workload green-doubler guard-deb "$WL_DOUBLER"
	run_workload green-alloc guard-deb "$WL_ALLOC"
}
