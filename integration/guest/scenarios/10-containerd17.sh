# shellcheck shell=bash
# Scenario 10: scenarios 1 and 2 on containerd 1.7.35 (config version 2,
# as 1.6; 1.7 parses the 2026 gVisor shim's JSON start reply, so the stock
# shim is used directly, without the compat wrapper), the 1 GiB
# allocation only, as 7.
scenario() {
	use_containerd 1.7 systemd
	red_and_green alloc
	use_containerd 1.6 systemd
}
