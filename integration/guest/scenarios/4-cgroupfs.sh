# shellcheck shell=bash
# Scenario 4: kubelet and containerd on the cgroupfs driver (runc
# SystemdCgroup=false, pod cgroup /kubepods/burstable/pod<uid>), Debian's
# runsc behind the guard. Old runsc applies the sandbox's resources only to
# a cgroup it created itself and reads the leaf's memory.max. The stock
# run is a baseline for the report (not asserted); the 2026 runsc behind
# the guard shows the guard is harmless there.
scenario() {
	use_containerd 1.6 cgroupfs
	run_workload stock-deb stock-deb "$WL_ALLOC" driver=cgroupfs
	requires_guard
	run_workload alloc guard-deb "$WL_ALLOC" driver=cgroupfs
	run_workload new guard-new "$WL_ALLOC" driver=cgroupfs
}
