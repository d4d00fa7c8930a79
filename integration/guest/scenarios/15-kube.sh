# shellcheck shell=bash
# Scenario 15, kube: the incident under a real kubelet and API server
# (guest/kube.sh). The seed's node: containerd 1.6, the systemd driver,
# the gVisor handler "runsc" with gVisor's own runtime type and Debian's
# runsc without systemd-cgroup, no guard. The seed's RuntimeClass and two
# Deployments, byte for byte (guest/manifests), through `kubectl apply`:
#   RED    the stock shim: each pod passes its 256Mi, its sandbox sits in
#          system.slice and kubelet's stats see nothing of it;
#   GREEN  install.sh --restart, nothing else changed, the same manifests:
#          each container OOM-killed and restarted by kubelet, the sandbox
#          and gofers in kubelet's pod slice, the stats right, audit OK;
#   beyond the seed, behind the guard: Guaranteed, BestEffort, a
#          RuntimeClass overhead, two containers (manifests/beyond-seed.yaml).
scenario() {
	requires_guard
	# shellcheck source=integration/guest/kube.sh
	. "$GUEST/kube.sh"
	# shellcheck disable=SC2034 # read by containerd_config_16 (lib.sh)
	HANDLERS="runsc:node:deb"
	plain_node_shim
	rm -f "$GUARD_BIN"
	use_containerd 1.6 systemd
	ctr -n k8s.io images import /var/lib/testbed/python.tar > /dev/null ||
		die "importing python:3.12-bookworm failed"
	PATH=$PATH:$SHARE/bin # the guard binary before it is installed
	local m=$GUEST/manifests

	begin_case cluster
	kube_up
	kubectl apply -f "$m/runtimeclass.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact runtimeclass_rc $?
	end_case
	trap 'kube_down; remove_all_pods' EXIT

	begin_case red
	case_facts runsc systemd
	kube_red python "$m/memory-eater-python.yaml"
	kube_red bash "$m/memory-eater-bash.yaml"
	end_case

	begin_case install
	case_facts runsc systemd
	sample doctor containerd-shim-runsc-guard-v1 doctor
	local sum
	sum=$(sha256sum < /etc/containerd/config.toml)
	sample install-dry-run "$SHARE/install.sh" --dry-run
	fact dry_run_changed_config "$([ "$(sha256sum < /etc/containerd/config.toml)" = "$sum" ] && echo no || echo yes)"
	fact dry_run_installed "$([ -e "$GUARD_BIN" ] && echo yes || echo no)"
	sample install "$SHARE/install.sh" --restart
	fact install_tail "$(tail -n 1 "$RESULTS/$SCENARIO/samples/install.txt")"
	wait_cri && wait_until 120 kube_node_ready
	fact node_ready_after_install $?
	fact handler_after_install "$(handler_field runsc .runtimeType)"
	end_case

	# One pod at a time where it matters: a pod in CrashLoopBackOff
	# allocates again at every restart, and the VM has two CPUs; the bash
	# doubler alone takes about 3.5 minutes to reach 256Mi under TCG. Each
	# pod is deleted once recorded.
	begin_case green
	case_facts runsc systemd
	kubectl apply -f "$m/memory-eater-python.yaml" -f "$m/memory-eater-bash.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact apply_rc $?
	kube_green python 420
	kubectl delete -f "$m/memory-eater-python.yaml" --wait=false > /dev/null 2>&1
	kube_green bash 600
	sample kubectl-get-pods-green kubectl get pods -o wide
	kubectl delete -f "$m/memory-eater-bash.yaml" --wait=false > /dev/null 2>&1
	end_case

	begin_case beyond
	case_facts runsc systemd
	wait_until 120 kube_no_pods
	kubectl apply -f "$m/beyond-seed.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact apply_rc $?
	local pod rc
	for pod in eater-guaranteed eater-overhead eater-two; do
		kube_wait_oom "${pod#eater-}" "$pod" eater 420 && wait_until 60 kube_sandbox_pid "$pod" > /dev/null
		rc=$?
		fact "${pod#eater-}_waited" $rc
		[ $rc = 0 ] || kube_diag "$pod restarted"
		# Its sandbox lives seconds per restart: again until it is caught
		# running (facts read later win).
		for _ in 1 2 3; do
			kube_record "${pod#eater-}" "$pod" && break
			wait_until 120 kube_sandbox_pid "$pod" > /dev/null
		done
		kubectl delete pod "$pod" --wait=false > /dev/null 2>&1
	done
	# BestEffort: nothing limits it; it must hold its 300 MB, not restart.
	wait_until 300 kube_logged eater-besteffort HELD-300MB
	fact besteffort_held $?
	sleep 10
	kube_record besteffort eater-besteffort
	sample kubectl-get-pods-beyond kubectl get pods -o wide
	audit_case audit-beyond
	end_case
}

# kube_red APP MANIFEST: the seed's Deployment APP on the stock shim: once
# its sandbox charges 320 MiB (past the pod's 256Mi), what kubectl, kubelet
# and the node show (facts APP_*), then the Deployment is deleted before it
# eats the VM.
kube_red() {
	local app=memory-eater-$1 pod rc
	kubectl apply -f "$2" > "$CASE_DIR/apply-$1.txt" 2>&1
	fact "${1}_apply_rc" $?
	wait_until 180 kube_pod_running "$app" || kube_diag "$app running"
	pod=$(kube_pod "$app")
	kube_wait_sandbox_over "$pod" $((320 * MiB)) 300
	rc=$?
	fact "${1}_over_limit" $rc
	[ $rc = 0 ] || kube_diag "$app over its limit"
	kube_record "$1" "$pod"
	sample "kubectl-get-pods-red-$1" kubectl get pods -o wide
	sample "kubectl-describe-red-$1" kubectl describe pod "$pod"
	[ "$1" = python ] && audit_case audit-red
	kubectl delete -f "$2" --wait=false > /dev/null 2>&1
	kubectl delete pod "$pod" --grace-period=0 --force > /dev/null 2>&1
	wait_until 120 kube_no_pods
	fact "${1}_gone" $?
}

# kube_green APP SECONDS: waits up to SECONDS for the seed's Deployment
# APP to have been OOM-killed and restarted by kubelet (its container is
# "ubuntu"), then records it (facts APP_*) while its sandbox runs again.
# kubelet often stops a pod's first container within seconds of its start
# ("Pod sandbox changed", exit 143, with the stock shim too): the OOM kill
# is then the second restart.
kube_green() {
	local app=memory-eater-$1 pod rc
	wait_until 180 kube_pod_running "$app" || kube_diag "$app running"
	pod=$(kube_pod "$app")
	kube_wait_oom "$1" "$pod" ubuntu "$2"
	rc=$?
	fact "${1}_restarted" $rc
	[ $rc = 0 ] || kube_diag "$app restarted"
	wait_until 60 kube_sandbox_pid "$pod" > /dev/null
	audit_case "audit-green-$1" # while its sandbox runs: it dies again soon
	kube_record "$1" "$pod"
	sample "kubectl-describe-green-$1" kubectl describe pod "$pod"
}

kube_pod_running() {
	[ "$(kubectl get pod -l app="$1" -o jsonpath='{.items[*].status.phase}' 2> /dev/null)" = Running ]
}

# kube_logged POD TEXT: POD's log holds TEXT.
kube_logged() { kubectl logs "$1" 2> /dev/null | grep -q "$2"; }
