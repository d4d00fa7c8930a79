# shellcheck shell=bash
# Scenario 7: scenarios 1 and 2 on containerd 2.4.2 (config version 3,
# stock shim used directly; docs/upstream.md#test-bed), the 1 GiB
# allocation only (CI time: the doubler's cases took 86 s; scenario 8
# runs it behind the guard, 15 under kubelet, 1 and 2 when named).
scenario() {
	use_containerd 2.4 systemd
	red_and_green alloc
}
