# shellcheck shell=bash
# Scenario 12: the lifecycle faults of scenario 11 on containerd 2.4.2
# (RUNSC_GUARD_MANY_PODS pods at once, 10 by default: removing 20 gVisor
# pods under TCG takes containerd 2.4 minutes).
. "$GUEST/faults.sh"
scenario() {
	requires_guard
	use_containerd 2.4 systemd
	fault_table
}
