# shellcheck shell=bash
# Scenario 9, install: install.sh on the RED node turns it GREEN (issue 5).
# The seed's node: containerd 1.6, systemd driver, one gVisor handler
# "runsc" with gVisor's own runtime_type (io.containerd.runsc.v1, the type
# install.sh switches) and Debian's runsc without systemd-cgroup, no guard
# on the node. The seed pod is RED; audit and doctor, run from the
# delivered binary, say so; install.sh --dry-run shows the change;
# install.sh --restart installs the guard and switches the handler; a new
# pod on the same handler is GREEN and audit says OK. The outputs are kept
# as samples for the README (results/9/samples/).
scenario() {
	requires_guard
	# shellcheck disable=SC2034 # read by containerd_config_16 (lib.sh)
	HANDLERS="runsc:node:deb"
	plain_node_shim
	rm -f "$GUARD_BIN"
	use_containerd 1.6 systemd
	PATH=$PATH:$SHARE/bin # the guard binary before it is installed

	run_workload red runsc "$WL_DOUBLER" keep=1
	audit_case audit-before
	sample doctor containerd-shim-runsc-guard-v1 doctor
	fact doctor_errors "$(grep -c '^ERROR' "$RESULTS/$SCENARIO/samples/doctor.txt")"
	local sum
	sum=$(sha256sum < /etc/containerd/config.toml)
	sample install-dry-run "$SHARE/install.sh" --dry-run
	fact dry_run_diff "$(grep -q '^+.*runtime_type = "io.containerd.runsc-guard.v1"' \
		"$RESULTS/$SCENARIO/samples/install-dry-run.txt" && echo yes || echo no)"
	fact dry_run_changed_config "$([ "$(sha256sum < /etc/containerd/config.toml)" = "$sum" ] && echo no || echo yes)"
	fact dry_run_installed "$([ -e "$GUARD_BIN" ] && echo yes || echo no)"
	sample install "$SHARE/install.sh" --restart
	fact install_tail "$(tail -n 1 "$RESULTS/$SCENARIO/samples/install.txt")"
	end_workload

	# Audited once the guard has placed and sized the sandbox (before the
	# workload starts: it ends in an OOM kill that takes the sandbox
	# down), and again right after StartContainer, when old runsc has
	# started the app container's gofer.
	run_workload green runsc "$WL_DOUBLER" before_start="audit_case audit-after" \
		after_start="audit_case audit-running"
}
