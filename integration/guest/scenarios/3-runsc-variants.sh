# shellcheck shell=bash
# Scenario 3: other runsc set-ups behind the guard. Debian's runsc already
# configured with systemd-cgroup (placement right, size wrong: gVisor
# #9580), the 2026 runsc with and without it (already right: the guard
# should change nothing and say so in its record).
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	run_workload deb-sd guard-deb-sd "$WL_ALLOC"
	run_workload new-sd guard-new-sd "$WL_ALLOC"
	run_workload new guard-new "$WL_ALLOC"
}
