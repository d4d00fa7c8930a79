# shellcheck shell=bash
# Scenario 11: lifecycle faults on containerd 1.6 (guest/faults.sh), the
# stock shim and the guard in the same boot.
. "$GUEST/faults.sh"
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	fault_table
}
