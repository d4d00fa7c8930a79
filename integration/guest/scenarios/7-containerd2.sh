# shellcheck shell=bash
# Scenario 7: scenarios 1 and 2 on containerd 2.4.2 (config version 3,
# stock shim used directly; docs/upstream.md#test-bed).
scenario() {
	use_containerd 2.4 systemd
	red_and_green
}
