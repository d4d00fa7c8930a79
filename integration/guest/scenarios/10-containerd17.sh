# shellcheck shell=bash
# Scenario 10: scenarios 1 and 2 on containerd 1.7.35 (config version 2,
# as 1.6; 1.7 parses the 2026 gVisor shim's JSON start reply, so the stock
# shim is used directly, without the compat wrapper).
scenario() {
	use_containerd 1.7 systemd
	run_workload red-doubler stock-deb "$WL_DOUBLER"
	run_workload red-alloc stock-deb "$WL_ALLOC"
	requires_guard
	run_workload green-doubler guard-deb "$WL_DOUBLER"
	run_workload green-alloc guard-deb "$WL_ALLOC"
	use_containerd 1.6 systemd
}
