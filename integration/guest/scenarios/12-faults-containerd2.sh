# shellcheck shell=bash
# Scenario 12: the lifecycle faults of scenario 11 on containerd 2.4.2,
# with 10 pods at once (20 in scenario 11; removing 20 gVisor pods under TCG
# takes containerd 2.4 minutes).
. "$GUEST/faults.sh"
scenario() {
	requires_guard
	use_containerd 2.4 systemd
	MANY_PODS=10 fault_table
}
