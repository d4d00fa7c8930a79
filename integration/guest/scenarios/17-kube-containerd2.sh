# shellcheck shell=bash
# Scenario 17, kube-containerd2 (run when named: CI time budget): scenario
# 15's seed node on containerd 2.4.2 instead of 1.6, under the same real
# kubelet: containerd 2.4 runs as containerd.service (a drop-in), so
# install.sh --config /etc/containerd/config2.toml --restart restarts it as
# an operator's would. The seed's python Deployment RED on the stock shim,
# install, then GREEN.
# shellcheck source=integration/guest/scenarios/15-kube.sh
. "$GUEST/scenarios/15-kube.sh" # kube_red, kube_green, ...

DROPIN=/run/systemd/system/containerd.service.d/90-testbed-containerd2.conf

scenario() {
	requires_guard
	# shellcheck source=integration/guest/kube.sh
	. "$GUEST/kube.sh"
	kube_seed_node
	containerd2_service
	trap 'kube_down; remove_all_pods; containerd2_service_undo' EXIT
	local m=$GUEST/manifests
	kube_seed_cluster ctr2 "$m"

	begin_case red
	case_facts runsc systemd
	kube_red "$m" python
	end_case

	begin_case install
	case_facts runsc systemd
	sample install "$SHARE/install.sh" --config /etc/containerd/config2.toml --restart
	wait_cri && wait_until 120 kube_node_ready
	fact node_ready_after_install $?
	fact handler_after_install "$(handler_field runsc .runtimeType)"
	end_case

	begin_case green
	case_facts runsc systemd
	kubectl apply -f "$m/memory-eater-python.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact apply_rc $?
	kube_green python 420 # audit-green-python while its sandbox runs
	kubectl delete -f "$m/memory-eater-python.yaml" --wait=false > /dev/null 2>&1
	end_case
}

# containerd2_service: containerd 2.4.2 (config version 3) as
# containerd.service, in place of Debian's 1.6.
containerd2_service() {
	stop_containerd
	# containerd's default state directory, as on a node that runs 2.4:
	# audit and doctor look there and for `containerd` on PATH.
	containerd_config_24 systemd | sed 's|^state = "/run/containerd2"|state = "/run/containerd"|' > /etc/containerd/config2.toml
	ln -sf "$TOOLS/containerd2" /usr/local/bin/containerd
	mkdir -p "${DROPIN%/*}"
	printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/containerd2 --config /etc/containerd/config2.toml\n' > "$DROPIN"
	systemctl daemon-reload
	systemctl start containerd || die "containerd 2.4 as containerd.service did not start"
	CTRD_STATE=/run/containerd CTR=ctr2
	wait_cri || die "containerd 2.4 CRI does not answer"
	crictl inspecti "$IMAGE" > /dev/null 2>&1 || ctr2 -n k8s.io images import "$IMAGE_TAR" > /dev/null ||
		die "image import failed"
	CTRD_RUNNING="2.4-service systemd"
	say "containerd $(crictl version | awk '/RuntimeVersion/ {print $2}') as containerd.service"
}

containerd2_service_undo() {
	stop_containerd
	rm -f "$DROPIN" /usr/local/bin/containerd
	systemctl daemon-reload
}
