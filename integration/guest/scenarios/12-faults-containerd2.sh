# shellcheck shell=bash
# Scenario 12: the lifecycle faults of scenario 11 on containerd 2.4.2.
. "$GUEST/faults.sh"
scenario() {
	requires_guard
	use_containerd 2.4 systemd
	fault_table
}
