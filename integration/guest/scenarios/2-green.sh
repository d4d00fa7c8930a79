# shellcheck shell=bash
# Scenario 2, GREEN: the same node and runsc as scenario 1, only the
# runtime type changed to runsc-guard. Expected: sandbox and gofers in the
# pod slice, --total-memory=268435456, the workload OOM-killed.
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	run_workload doubler guard-deb "$WL_DOUBLER"
	run_workload alloc guard-deb "$WL_ALLOC"
}
