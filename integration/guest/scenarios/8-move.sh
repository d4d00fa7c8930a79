# shellcheck shell=bash
# Scenario 8, move: the guard's fallback when it may not touch runsc's
# options. add_runsc_flags = false in the guard's configuration, Debian's
# runsc without systemd-cgroup, systemd driver: runsc puts the sandbox
# under system.slice, and the guard must move every process of that cgroup
# over D-Bus into the transient scope runsc-guard-<sandbox id>.scope under
# the pod slice (MemoryMax = the pod limit), between Create and Start. It
# still writes the pod limit into the sandbox spec, which old runsc applies
# to its own cgroup before it sizes the sandbox (--total-memory).
# reset_node removes the configuration again for the next scenario.
scenario() {
	requires_guard
	guard_config 'add_runsc_flags = false'
	use_containerd 1.6 systemd
	run_workload doubler guard-deb "$WL_DOUBLER"
	run_workload alloc guard-deb "$WL_ALLOC"
}
