# shellcheck shell=bash
# Scenario 15, kube: the incident under a real kubelet and API server
# (guest/kube.sh). The seed's node: containerd 1.6, the systemd driver,
# the gVisor handler "runsc" with gVisor's own runtime type and Debian's
# runsc without systemd-cgroup, no guard. The seed's RuntimeClass and two
# Deployments, byte for byte (guest/manifests), through `kubectl apply`:
#   RED    the stock shim, one at a time: each pod passes its 256Mi, its
#          sandbox sits in system.slice and kubelet's stats see nothing
#          of it;
#   GREEN  install.sh --restart, nothing else changed, the same manifests:
#          each container OOM-killed and restarted by kubelet, the sandbox
#          and gofers in kubelet's pod slice, the stats right, audit OK;
#   beyond the seed, behind the guard: Guaranteed, BestEffort, a
#          RuntimeClass overhead, two containers (manifests/beyond-seed.yaml);
#   resize a pod raised in place with kubectl (manifests/resize.yaml).
scenario() {
	requires_guard
	# shellcheck source=integration/guest/kube.sh
	. "$GUEST/kube.sh"
	kube_seed_node
	use_containerd 1.6 systemd
	local m=$GUEST/manifests
	kube_seed_cluster ctr "$m"
	KUBE_WATCH=
	trap '[ -z "$KUBE_WATCH" ] || kill "$KUBE_WATCH" 2> /dev/null; kube_down; remove_all_pods' EXIT

	begin_case red
	case_facts runsc systemd
	# One at a time, as in stop 16's passing CI; both at once starved
	# the doubler under TCG.
	kube_red "$m" python
	kube_red "$m" bash
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

	# One pod at a time where it matters (stop 17's CI ran the bash
	# doubler beside the beyond and resize pods and ran out of the
	# scenario's 30 minutes: under TCG the VM's two CPUs starve them all):
	# a pod in CrashLoopBackOff allocates again at every restart; the bash
	# doubler alone takes about 3.5 minutes to reach 256Mi under TCG. Each
	# pod is deleted once recorded.
	begin_case green
	case_facts runsc systemd
	kubectl apply -f "$m/memory-eater-python.yaml" -f "$m/memory-eater-bash.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact apply_rc $?
	# bash's stats are watched from now on: it may be OOM-killed before
	# its own wait begins.
	local watch=$RESULTS/$SCENARIO/bash-stats-peak
	kube_stats_watch memory-eater-bash "$watch" &
	KUBE_WATCH=$!
	kube_green python 420
	kubectl delete -f "$m/memory-eater-python.yaml" --wait=false > /dev/null 2>&1
	kube_green bash 600 "$watch"
	kill "$KUBE_WATCH" 2> /dev/null
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
		# kube_wait_oom catches the sandbox while it waits; a pod's later
		# sandboxes live seconds each, between ever longer back-offs.
		kube_wait_oom "${pod#eater-}" "$pod" eater 420
		rc=$?
		fact "${pod#eater-}_waited" $rc
		[ $rc = 0 ] || kube_diag "$pod restarted"
		kube_caught "${pod#eater-}" || wait_until 180 kube_catch "${pod#eater-}" "$pod" ||
			kube_diag "$pod sandbox running"
		kube_record "${pod#eater-}" "$pod"
		kubectl delete pod "$pod" --wait=false > /dev/null 2>&1
	done
	# BestEffort: nothing limits it; it must hold its 300 MB, not restart.
	wait_until 300 kube_logged eater-besteffort HELD-300MB
	fact besteffort_held $?
	sleep 10
	kube_record besteffort eater-besteffort
	sample kubectl-get-pods-beyond kubectl get pods -o wide
	audit_case audit-beyond
	kubectl delete -f "$m/beyond-seed.yaml" --wait=false > /dev/null 2>&1
	end_case

	kube_resize "$m"
}

# kube_resize DIR: a running pod behind the guard (DIR/resize.yaml) raised in place with
# `kubectl patch --subresource resize` from 256Mi to 512Mi: kubelet writes
# the pod slice, then calls UpdateContainerResources (which Debian's runsc
# fails: the 2026 shim's `runsc update`); the guard makes the sandbox's
# scope follow. A 400 MB allocation must then survive. Scenario 16 has the
# stock shim beside it, with crictl, in this boot.
kube_resize() {
	begin_case resize
	case_facts runsc systemd
	wait_until 120 kube_no_pods
	kubectl apply -f "$1/resize.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact apply_rc $?
	wait_until 300 kube_logged eater-resize READY || kube_diag "eater-resize ready"
	kube_podlevel
	kube_resize_limits before
	# A strategic merge patch (kubectl's default): containers merge by
	# name (a JSON merge patch would replace the list, which the API
	# server refuses: only cpu and memory are mutable).
	kubectl patch pod eater-resize --subresource resize -p \
		'{"spec":{"containers":[{"name":"eater","resources":{"limits":{"memory":"512Mi","cpu":"1"},"requests":{"memory":"200Mi","cpu":"100m"}}}]}}' \
		> "$CASE_DIR/patch.txt" 2>&1
	fact patch_rc $?
	wait_until 120 kube_pod_limit_is eater-resize $((512 * MiB))
	fact pod_raised $?
	# kubelet's UpdateContainerResources comes after the pod slice.
	wait_until 60 kube_sandbox_limit_is eater-resize $((512 * MiB)) max
	fact sandbox_followed $?
	kube_resize_limits raised
	fact resize_conditions "$(kubectl get pod eater-resize -o json | jq -c '[.status.conditions[]? | select(.type | startswith("PodResize")) | {type, reason, message}]')"
	fact status_limits "$(kubectl get pod eater-resize -o jsonpath='{.status.containerStatuses[0].resources.limits}')"
	local out
	out=$(timeout 180 kubectl exec eater-resize -- python -c "b = b' ' * (400 << 20); print('ALLOC-OK', len(b))" 2>&1)
	fact alloc_rc $?
	fact alloc_output "${out:0:300}"
	sleep 3
	kube_record after eater-resize
	local id
	id=$(crictl pods --name eater-resize --state ready -q 2> /dev/null | head -n1)
	[ -n "$id" ] && fact follows "$(jq -c '[.follows[]? | {from: .from.memory_bytes, to: .to.memory_bytes, written}]' \
		"$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$id/runsc-guard.json" 2> /dev/null)"
	audit_case audit-resize
	sample kubectl-describe-resize kubectl describe pod eater-resize
	kubectl delete pod eater-resize --wait=false > /dev/null 2>&1
	end_case
}

# kube_podlevel: the pod of pod-level resources (256Mi on the pod, none
# on its container): what its sandbox booted with, what the guard resolved
# and the CRI annotation carried; then 400 MB must be killed in it.
kube_podlevel() {
	local id pid b out
	wait_until 120 kube_logged eater-podlevel READY
	fact podlevel_ready $?
	id=$(crictl pods --name eater-podlevel --state ready -q 2> /dev/null | head -n1)
	pid=$(kube_sandbox_pid eater-podlevel)
	b=$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$id
	fact podlevel_pod_memory_max "$(cat "$(cg_mem "$(kube_pod_cgroup eater-podlevel)" max)" 2> /dev/null)"
	[ -n "$pid" ] && fact podlevel_total_memory "$(flag_of "$pid" total-memory)"
	fact podlevel_annotation "$(jq -r '.annotations["io.kubernetes.cri.sandbox-memory"] // ""' "$b/config.json" 2> /dev/null)"
	fact podlevel_guard_effective "$(jq -r '.effective.memory_bytes // ""' "$b/runsc-guard.json" 2> /dev/null)"
	out=$(timeout 180 kubectl exec eater-podlevel -- python -c "b = b' ' * (400 << 20); print('ALLOC-OK', len(b))" 2>&1)
	fact podlevel_alloc_output "${out:0:200}"
	wait_until 60 kube_oom_restarted eater-podlevel eater
	fact podlevel_oom_restarted $?
	kubectl delete pod eater-podlevel --wait=false > /dev/null 2>&1
}

# kube_resize_limits KEY: the pod slice's and the sandbox cgroup's
# memory.max now (facts KEY_pod_memory_max, KEY_sandbox_memory_max).
kube_resize_limits() {
	local pid
	fact "$1_pod_memory_max" "$(cat "$(cg_mem "$(kube_pod_cgroup eater-resize)" max)" 2> /dev/null)"
	pid=$(kube_sandbox_pid eater-resize)
	[ -n "$pid" ] && fact "$1_sandbox_memory_max" "$(cat "$(cg_mem "$(cgroup_of "$pid")" max)" 2> /dev/null)"
	return 0
}

# kube_pod_limit_is POD BYTES: POD's slice has memory.max BYTES.
kube_pod_limit_is() { [ "$(cat "$(cg_mem "$(kube_pod_cgroup "$1")" max)" 2> /dev/null)" = "$2" ]; }

# kube_sandbox_limit_is POD VALUE...: POD's sandbox cgroup has memory.max
# one of VALUEs.
kube_sandbox_limit_is() {
	local pid v want
	pid=$(kube_sandbox_pid "$1") && [ -n "$pid" ] || return 1
	v=$(cat "$(cg_mem "$(cgroup_of "$pid")" max)" 2> /dev/null) || return 1
	shift
	for want in "$@"; do [ "$v" = "$want" ] && return 0; done
	return 1
}

# kube_red DIR APP: the seed's Deployment APP (DIR/memory-eater-APP.yaml) on
# the stock shim, watched until its sandbox charges 320 MiB (past the pod's
# 256Mi; python within about a minute, the bash doubler in minutes); then
# what kubectl, kubelet and the node show is recorded (facts APP_*) and the
# Deployment deleted: nothing limits it here.
kube_red() {
	local dir=$1 app=$2 pod t0 rc=1
	kubectl apply -f "$dir/memory-eater-$app.yaml" > "$CASE_DIR/apply-$app.txt" 2>&1
	fact "${app}_apply_rc" $?
	wait_until 180 kube_pod_running "memory-eater-$app" || kube_diag "memory-eater-$app running"
	# 420 s: on the stock shim kubelet sometimes re-creates the sandbox of
	# a pod seconds after it started ("Pod sandbox changed"), the doubler
	# then starts over (seen up to four times in a row under TCG, each
	# such sandbox preceded by containerd's 2 s task-state timeout,
	# "get state for <id>: context deadline exceeded": stateTimeout in
	# https://github.com/containerd/containerd/blob/v1.6.20/services/tasks/local.go).
	# The cause is not known; behind the guard it was not seen.
	t0=$SECONDS
	while [ $((SECONDS - t0)) -lt 420 ]; do
		pod=$(kube_pod "memory-eater-$app")
		# kube_sandbox_over records the sandbox it saw past 320 MiB: a
		# sandbox running later may be a re-created one not grown yet.
		[ -n "$pod" ] && kube_sandbox_over "$pod" $((320 * MiB)) "$app" && { rc=0; break; }
		sleep 1
	done
	fact "${app}_over_limit" $rc
	if [ $rc != 0 ]; then
		kube_diag "memory-eater-$app over its limit"
		# The sandbox running now, as it is: where it sits and what it
		# booted with are the incident whatever it charges.
		pod=$(kube_pod "memory-eater-$app")
		wait_until 60 kube_catch "$app" "$pod"
	fi
	kube_record "$app" "$pod" pod-only
	sample "kubectl-get-pods-red-$app" kubectl get pods -o wide
	sample "kubectl-describe-red-$app" kubectl describe pod "$pod"
	[ "$app" = python ] && audit_case audit-red
	kubectl delete -f "$dir/memory-eater-$app.yaml" --wait=false > /dev/null 2>&1
	kubectl delete pod "$pod" --grace-period=0 --force > /dev/null 2>&1
	# By "no pods at all": a pod its ReplicaSet made before the garbage
	# collector removed it has another name.
	wait_until 120 kube_no_pods
	fact "${app}_gone" $?
}

# kube_green APP SECONDS [PEAK_FILE]: waits up to SECONDS for the seed's Deployment
# APP to have been OOM-killed and restarted by kubelet (its container is
# "ubuntu"), then records it (facts APP_*) while its sandbox runs again.
# kubelet often stops a pod's first container within seconds of its start
# ("Pod sandbox changed", exit 143, with the stock shim too): the OOM kill
# is then the second restart.
kube_green() {
	local app=memory-eater-$1 pod rc
	wait_until 180 kube_pod_running "$app" || kube_diag "$app running"
	pod=$(kube_pod "$app")
	kube_wait_oom "$1" "$pod" ubuntu "$2" "${3:-}"
	rc=$?
	fact "${1}_restarted" $rc
	[ $rc = 0 ] || kube_diag "$app restarted"
	# The audit while a sandbox of the pod runs (it dies again soon).
	wait_until 240 kube_catch "$1" "$pod"
	fact "${1}_caught" $?
	audit_case "audit-green-$1"
	kube_record "$1" "$pod"
	sample "kubectl-describe-green-$1" kubectl describe pod "$pod"
}

kube_pod_running() {
	[ "$(kubectl get pod -l app="$1" -o jsonpath='{.items[*].status.phase}' 2> /dev/null)" = Running ]
}

# kube_logged POD TEXT: POD's log holds TEXT.
kube_logged() { kubectl logs "$1" 2> /dev/null | grep -q "$2"; }
