# shellcheck shell=bash
# Scenario 1, RED: the seed's node reproduced. Stock gVisor shim with
# Debian's runsc 0.0~20221219 (before gVisor #9631, no systemd-cgroup:
# gVisor #193, #9580), systemd cgroup driver, containerd 1.6. Expected: the
# sandbox lands in system.slice, boots with the VM's RAM as --total-memory,
# and the workload goes past its 256Mi limit unharmed.
scenario() {
	use_containerd 1.6 systemd
	run_workload doubler stock-deb "$WL_DOUBLER"
	run_workload alloc stock-deb "$WL_ALLOC"
}
