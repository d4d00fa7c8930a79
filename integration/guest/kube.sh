# shellcheck shell=bash
# The test bed's single-node Kubernetes (the kube scenario): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kubelet of one
# release (the tools disk's multi-call `kube`, integration/kube), each a
# transient systemd unit, on the containerd the scenario started. Flags and
# certificates follow Kubernetes' hack/local-up-cluster.sh, cut to one
# node: one CA signs the API server's serving certificate; the components
# authenticate with static tokens (--token-auth-file) as the users RBAC's
# bootstrap policy knows (system:kube-controller-manager,
# system:kube-scheduler, system:node:<node> in system:nodes), and the
# controller manager runs each controller as its own service account
# (--use-service-account-credentials: its own user may not create
# ReplicaSets); kubelet serves its API to the API server anonymously (its
# /stats/summary, as metrics-server would read it, is read through the API
# server's node proxy).
# Sourced after lib.sh.

KUBE_DIR=/var/lib/testbed-kube
KUBE_NODE=tbvm
# The node's address: kubelet refuses a loopback node IP, and the VM has no
# network, so it is a dummy interface's (kube_up makes it).
KUBE_NODE_IP=10.99.0.1
export KUBECONFIG=$KUBE_DIR/admin.kubeconfig
PATH=$PATH:$TOOLS # kubectl; appended: the tools disk's gVisor shim must not shadow the node's

# kube_certs: the CA, the API server's serving certificate and the service
# account signing key (EC keys: RSA generation is slow under TCG), and one
# kubeconfig per client.
kube_certs() {
	local d=$KUBE_DIR
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		openssl ecparam -name prime256v1 -genkey -noout -out ca.key &&
			openssl req -x509 -new -key ca.key -subj /CN=testbed-ca -days 30 -out ca.crt &&
			openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key &&
			openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr &&
			printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' "$KUBE_NODE_IP" > san.ext &&
			openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
				-extfile san.ext -out apiserver.crt &&
			openssl ecparam -name prime256v1 -genkey -noout -out sa.key &&
			openssl ec -in sa.key -pubout -out sa.pub
	) > "$d/certs.log" 2>&1 || return
	: > "$d/tokens.csv"
	local name user group token
	# name/user/group ("-": none): the users RBAC's bootstrap policy binds.
	while IFS=/ read -r name user group; do
		token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
		if [ "$group" = - ]; then
			echo "$token,$user,$name" >> "$d/tokens.csv"
		else
			echo "$token,$user,$name,\"$group\"" >> "$d/tokens.csv"
		fi
		kubectl config --kubeconfig="$d/$name.kubeconfig" set-cluster testbed \
			--server=https://127.0.0.1:6443 --certificate-authority="$d/ca.crt" --embed-certs > /dev/null &&
			kubectl config --kubeconfig="$d/$name.kubeconfig" set-credentials "$name" --token="$token" > /dev/null &&
			kubectl config --kubeconfig="$d/$name.kubeconfig" set-context testbed --cluster=testbed --user="$name" > /dev/null &&
			kubectl config --kubeconfig="$d/$name.kubeconfig" use-context testbed > /dev/null || return
	done <<USERS
admin/admin/system:masters
kube-controller-manager/system:kube-controller-manager/-
kube-scheduler/system:kube-scheduler/-
kubelet/system:node:$KUBE_NODE/system:nodes
USERS
}

# kube_unit NAME CMD...: CMD as a transient unit. The control plane is
# shielded from the kernel's OOM killer as kubelet shields itself: a RED
# pod eats the node's memory, and the cluster must outlive it to report.
kube_unit() {
	local name=$1
	shift
	systemd-run -q --unit="$name" -p OOMScoreAdjust=-998 -p KillMode=process -p Delegate=yes \
		-p LimitNOFILE=1048576 -p StandardOutput=append:/var/log/$name.log \
		-p StandardError=append:/var/log/$name.log "$@" > /dev/null
}

# kube_kubelet_config: kubelet's configuration file: the systemd cgroup
# driver (as containerd's runc handler), the containerd socket, the
# thresholds of a 4 GiB test VM (no eviction or image GC during a
# scenario), and its API open to the API server.
kube_kubelet_config() {
	cat > "$KUBE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
failCgroupV1: false
resolvConf: /etc/resolv.conf
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
EOF
}

# kube_seed_node: the incident's node before containerd starts: handler
# "runsc" with gVisor's own runtime type and Debian's runsc without
# systemd-cgroup (read by containerd_config_*, lib.sh), and no guard
# installed.
kube_seed_node() {
	# shellcheck disable=SC2034 # read by containerd_config_* (lib.sh)
	HANDLERS="runsc:node:deb"
	plain_node_shim
	rm -f "$GUARD_BIN"
}

# kube_seed_cluster CTR MANIFESTS: on the running containerd (CTR: its
# ctr), the seed's image imported, then case "cluster": the control plane
# and kubelet up, the seed's RuntimeClass applied.
kube_seed_cluster() {
	"$1" -n k8s.io images import /var/lib/testbed/python.tar > /dev/null ||
		die "importing python:3.12-bookworm failed"
	PATH=$PATH:$SHARE/bin # the guard binary before it is installed
	begin_case cluster
	kube_up
	kubectl apply -f "$2/runtimeclass.yaml" > "$CASE_DIR/apply.txt" 2>&1
	fact runtimeclass_rc $?
	end_case
}

# kube_up: starts the cluster on the running containerd and waits for the
# node to be Ready; fact kube_ready_seconds (first unit to Ready).
kube_up() {
	local t0=$SECONDS d=$KUBE_DIR
	rm -rf "$d"
	kube_certs || die "kube: certificates: $(tail -n 3 "$d/certs.log")"
	kube_kubelet_config
	if ! ip -br addr show dev tb0 2> /dev/null | grep -q "$KUBE_NODE_IP/"; then
		ip link add tb0 type dummy && ip addr add "$KUBE_NODE_IP/24" dev tb0 && ip link set tb0 up ||
			die "kube: no dummy interface for the node IP"
	fi
	kube_unit kube-etcd "$TOOLS/etcd" --data-dir "$d/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --unsafe-no-fsync
	kube_unit kube-apiserver "$TOOLS/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --advertise-address=$KUBE_NODE_IP --secure-port=6443 \
		--tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
		--client-ca-file="$d/ca.crt" --token-auth-file="$d/tokens.csv" \
		--authorization-mode=Node,RBAC --allow-privileged=true \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
		--service-cluster-ip-range=10.0.0.0/24 --kubelet-preferred-address-types=InternalIP,Hostname
	wait_until 180 kube_api_ready || die "kube: the API server is not ready after 180 s: $(tail -n 5 /var/log/kube-apiserver.log)"
	fact kube_api_seconds $((SECONDS - t0))
	kube_unit kube-controller-manager "$TOOLS/kube-controller-manager" \
		--kubeconfig="$d/kube-controller-manager.kubeconfig" --leader-elect=false \
		--service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
		--use-service-account-credentials=true --bind-address=127.0.0.1
	kube_unit kube-scheduler "$TOOLS/kube-scheduler" --kubeconfig="$d/kube-scheduler.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1
	kube_unit kubelet "$TOOLS/kubelet" --kubeconfig="$d/kubelet.kubeconfig" --config="$d/kubelet.yaml" \
		--hostname-override=$KUBE_NODE --node-ip=$KUBE_NODE_IP
	wait_until 240 kube_node_ready || die "kube: node $KUBE_NODE is not Ready after 240 s: $(kubectl get node -o wide 2>&1 | tail -n 2); $(tail -n 5 /var/log/kubelet.log)"
	# Pods are admitted only once the namespace's service account exists.
	wait_until 120 kubectl get serviceaccount default > /dev/null 2>&1 ||
		die "kube: no default service account after 120 s"
	fact kube_ready_seconds $((SECONDS - t0))
	fact kube_version "$(kubectl version -o json 2> /dev/null | jq -r .serverVersion.gitVersion)"
	fact kubelet_version "$(kubectl get node $KUBE_NODE -o jsonpath='{.status.nodeInfo.kubeletVersion}')"
	fact kube_runtime "$(kubectl get node $KUBE_NODE -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')"
	say "kube: node $KUBE_NODE Ready in $((SECONDS - t0))s ($(kubectl get node $KUBE_NODE -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}'))"
}

kube_api_ready() { [ "$(kubectl get --raw /readyz 2> /dev/null)" = ok ]; }

kube_node_ready() {
	[ "$(kubectl get node $KUBE_NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2> /dev/null)" = True ]
}

# kube_down: deletes what the scenario applied, waits for kubelet to remove
# its pods, then stops the cluster; later scenarios find the node as before.
kube_down() {
	local u
	kubectl delete deployment,pod --all --grace-period=0 --force --wait=false > /dev/null 2>&1
	wait_until 120 kube_no_pods
	for u in $KUBE_UNITS; do
		systemctl stop "$u" 2> /dev/null
	done
	systemctl reset-failed 2> /dev/null
	# kubelet's QoS slices, now empty, as a node without kubelet has none.
	for u in kubepods-besteffort.slice kubepods-burstable.slice kubepods.slice; do
		systemctl stop "$u" 2> /dev/null
	done
	return 0
}

kube_no_pods() { [ -z "$(crictl pods --state ready -q 2> /dev/null)" ]; }

# kube_pod APP: the name of the running pod labelled app=APP (the newest).
kube_pod() {
	kubectl get pod -l app="$1" --sort-by=.metadata.creationTimestamp \
		-o jsonpath='{.items[-1:].metadata.name}' 2> /dev/null
}

# kube_sandbox_pid POD: the runsc-sandbox process of the Kubernetes pod POD
# (kubelet names the CRI sandbox after the pod).
kube_sandbox_pid() {
	local id
	id=$(crictl pods --name "$1" --state ready -q 2> /dev/null | head -n1)
	[ -n "$id" ] || return 1
	procs_of "$id" | awk '$2 == "runsc-sandbox" {print $1; exit}'
}

# kube_pod_cgroup POD: the pod's cgroup as kubelet made it (systemd driver):
# kubepods[-QOS].slice/.../kubepods[-QOS]-pod<uid with _>.slice.
kube_pod_cgroup() {
	local uid qos
	uid=$(kubectl get pod "$1" -o jsonpath='{.metadata.uid}')
	qos=$(kubectl get pod "$1" -o jsonpath='{.status.qosClass}' | tr '[:upper:]' '[:lower:]')
	uid=${uid//-/_}
	case $qos in
	guaranteed) echo "/kubepods.slice/kubepods-pod$uid.slice" ;;
	*) echo "/kubepods.slice/kubepods-$qos.slice/kubepods-$qos-pod$uid.slice" ;;
	esac
}

# kube_stats_memory POD: kubelet's /stats/summary working set of POD (what
# metrics-server, and so `kubectl top`, reports), in bytes.
kube_stats_memory() {
	kubectl get --raw "/api/v1/nodes/$KUBE_NODE/proxy/stats/summary" 2> /dev/null |
		jq -r --arg p "$1" '[.pods[] | select(.podRef.name == $p)][0].memory.workingSetBytes // empty'
}

kube_has_stats() { [ -n "$(kube_stats_memory "$1")" ]; }

# kube_stats_node: the node's working set in kubelet's /stats/summary: set
# when the summary could be read at all (a pod missing from it is then
# kubelet's answer, not a failed read).
kube_stats_node() {
	kubectl get --raw "/api/v1/nodes/$KUBE_NODE/proxy/stats/summary" 2> /dev/null |
		jq -r '.node.memory.workingSetBytes // empty'
}

# kube_catch PREFIX POD: records POD's sandbox (facts PREFIX_pod_id,
# _sandbox_pid, _sandbox_cgroup, _sandbox_current, _total_memory,
# _runsc_cgroups, _guard_actions) if its process runs now and no container
# of the pod is between CreateContainer and a finished StartContainer
# (CRI state CREATED: Debian's runsc starts an app container's gofer at
# Start, and the guard moves it before it answers Start, proxy/router.go);
# fails, recording nothing, otherwise. All or nothing: a pod in
# CrashLoopBackOff keeps a sandbox for seconds, and one that died between
# two reads left empty facts that later checks read (CI, a Guaranteed
# pod's cgroup). Not "every container RUNNING": CRI kept reporting an
# OOM-killed sandbox's container RUNNING for a minute, and a live
# sandbox's containers all RUNNING only for seconds.
#
# Cheap until it matches: a crictl call and a process scan a look.
kube_catch() {
	local p=$1 pod=$2 id pid cg cur total runsc
	id=$(crictl pods --name "$pod" --state ready -q 2> /dev/null | head -n1)
	[ -n "$id" ] || return 1
	kube_none_starting "$id" || return 1
	pid=$(procs_of "$id" | awk '$2 == "runsc-sandbox" {print $1; exit}')
	[ -n "$pid" ] || return 1
	cg=$(cgroup_of "$pid")
	cur=$(cat "$(cg_mem "$cg" current)" 2> /dev/null)
	total=$(flag_of "$pid" total-memory 2> /dev/null)
	runsc=$(kube_runsc_cgroups "$pod")
	# A zombie passes kill -0 but has no command line: total is empty.
	[ -n "$cg" ] && [ -n "$cur" ] && [ -n "$total" ] && kill -0 "$pid" 2> /dev/null &&
		kube_none_starting "$id" || return 1
	fact "${p}_pod_id" "$id"
	fact "${p}_sandbox_pid" "$pid"
	fact "${p}_sandbox_cgroup" "$cg"
	fact "${p}_sandbox_current" "$cur"
	fact "${p}_total_memory" "$total"
	fact "${p}_runsc_cgroups" "$runsc"
	local rec=$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$id/runsc-guard.json
	fact "${p}_guard_actions" "$(jq -r '(.actions // []) | join(",")' "$rec" 2> /dev/null)"
	return 0
}

# kube_none_starting SANDBOX_ID: no container of the sandbox is CREATED.
kube_none_starting() {
	local out
	out=$(crictl ps -a --pod "$1" --state created -q 2> /dev/null) || return 1
	[ -z "$out" ]
}

# kube_caught PREFIX: a sandbox was recorded for PREFIX in this case.
kube_caught() { grep -q "^${1}_sandbox_pid=" "$FACTS"; }

# kube_record PREFIX POD [pod-only]: facts PREFIX_* about POD as kubectl
# and the node show it: its sandbox as kube_catch records it if it runs
# now (unless pod-only: an earlier catch stands), phase, QoS class, per
# container restarts, reasons (last termination), the pod cgroup's limit
# and peak, and kubelet's stats. Fails when the sandbox was not caught
# (always with pod-only).
kube_record() {
	local p=$1 pod=$2 json podcg running=1
	[ "${3:-}" = pod-only ] || { kube_catch "$p" "$pod" && running=0; }
	json=$(kubectl get pod "$pod" -o json 2> /dev/null)
	fact "${p}_pod" "$pod"
	fact "${p}_phase" "$(jq -r .status.phase <<< "$json")"
	fact "${p}_qos" "$(jq -r .status.qosClass <<< "$json")"
	fact "${p}_restarts" "$(jq -r '[.status.containerStatuses[]? | "\(.name):\(.restartCount)"] | join(" ")' <<< "$json")"
	fact "${p}_reasons" "$(kube_reasons <<< "$json")"
	fact "${p}_states" "$(jq -r '[.status.containerStatuses[]? | "\(.name):\(.state | keys[0])"] | join(" ")' <<< "$json")"
	podcg=$(kube_pod_cgroup "$pod")
	fact "${p}_pod_cgroup" "$podcg"
	fact "${p}_pod_memory_max" "$(cat "$(cg_mem "$podcg" max)" 2> /dev/null)"
	fact "${p}_pod_peak" "$(cat "$(cg_mem "$podcg" peak)" 2> /dev/null)"
	fact "${p}_pod_current" "$(cat "$(cg_mem "$podcg" current)" 2> /dev/null)"
	fact "${p}_pod_oom_kill" "$(awk '$1 == "oom_kill" {print $2}' "$(cg_mem "$podcg" events)" 2> /dev/null)"
	# kubelet lists a pod in its stats once its sandbox has been seen by a
	# housekeeping pass: a sandbox just re-created after an OOM kill may be
	# missing for a few seconds.
	# On the stock shim kubelet may list no memory for the pod at all (seen
	# in CI for the RED bash pod after kubelet re-created its sandbox):
	# _stats_memory is then empty and _stats_node says the summary was read.
	wait_until 60 kube_has_stats "$pod"
	fact "${p}_stats_memory" "$(kube_stats_memory "$pod")"
	fact "${p}_stats_node" "$(kube_stats_node)"
	return $running
}

# kube_reasons: "container:reason:exit code" of each container's last
# termination (or current one), from the pod's JSON on stdin.
kube_reasons() {
	jq -r '[.status.containerStatuses[]? | "\(.name):\(.lastState.terminated.reason // .state.terminated.reason // "-"):\(.lastState.terminated.exitCode // .state.terminated.exitCode // "-")"] | join(" ")'
}

# kube_runsc_cgroups POD: "argv0=cgroup" of the sandbox and every gofer of
# POD (the runsc CLI the runsc shim runs, `runsc wait` and such, is the
# shim's helper and runs where the shim runs).
kube_runsc_cgroups() {
	local ids pid name cg out=""
	ids=$(crictl pods --name "$1" -q 2> /dev/null)
	ids="$ids $(for i in $ids; do crictl ps -a -p "$i" -q; done 2> /dev/null)"
	# shellcheck disable=SC2086 # one ID per word
	while read -r pid name; do
		case $name in runsc-sandbox | runsc-gofer) ;; *) continue ;; esac
		cg=$(cgroup_of "$pid")
		[ -n "$cg" ] && out="$out $name=$cg"
	done < <(procs_of $ids)
	echo "${out# }"
}

# kube_wait_oom PREFIX POD CONTAINER SECONDS: waits until kubelet reports
# that CONTAINER of POD ended OOM-killed and was restarted. Facts:
# PREFIX_oom_seen, the pod's restarts and reasons at that moment (a later
# re-creation of the sandbox may clear them), and PREFIX_stats_peak, the
# most of the pod's memory kubelet's /stats/summary showed meanwhile (a
# sandbox OOM-killed again and again is often missing from a single read).
# Until it has, it also catches the pod's sandbox (kube_catch) once. With
# PEAK_FILE (kube_stats_watch's), the peak counts what was seen before.
kube_wait_oom() {
	local p=$1 pod=$2 t0=$SECONDS peak=0 v json caught=1
	[ -n "${5:-}" ] && peak=$(cat "$5" 2> /dev/null || echo 0)
	while [ $((SECONDS - t0)) -lt "$4" ]; do
		[ $caught = 0 ] || { kube_catch "$p" "$pod" && caught=0; }
		v=$(kube_stats_memory "$pod")
		[ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
		if kube_oom_restarted "$pod" "$3"; then
			json=$(kubectl get pod "$pod" -o json)
			fact "${p}_oom_seen" "$(jq -r '[.status.containerStatuses[]? | "\(.name):\(.restartCount)"] | join(" ")' <<< "$json") $(kube_reasons <<< "$json")"
			fact "${p}_stats_peak" "$peak"
			return 0
		fi
		sleep 1
	done
	fact "${p}_stats_peak" "$peak"
	return 1
}

# kube_stats_watch APP FILE: until killed, keeps in FILE the most of the
# memory kubelet's stats showed for the newest pod labelled app=APP (run
# in the background while a pod grows unwatched).
kube_stats_watch() {
	local max=0 v
	while :; do
		v=$(kube_stats_memory "$(kube_pod "$1")")
		[ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v && echo "$max" > "$2"
		sleep 2
	done
}

kube_oom_restarted() {
	kubectl get pod "$1" -o json 2> /dev/null | jq -e --arg c "$2" '
		[.status.containerStatuses[]? | select(.name == $c)][0] |
		.restartCount >= 1 and .lastState.terminated.reason == "OOMKilled"' > /dev/null
}

# kube_sandbox_over POD BYTES P: POD's sandbox cgroup charges more than
# BYTES now; then records that sandbox as it is (facts P_sandbox_*,
# P_total_memory, P_runsc_cgroups): on the stock shim kubelet may
# re-create it seconds later (15-kube.sh, kube_red).
kube_sandbox_over() {
	local pid cur cg
	pid=$(kube_sandbox_pid "$1") && [ -n "$pid" ] || return 1
	cg=$(cgroup_of "$pid")
	cur=$(cat "$(cg_mem "$cg" current)" 2> /dev/null) || return 1
	[ "${cur:-0}" -gt "$2" ] || return 1
	fact "${3}_sandbox_pid" "$pid"
	fact "${3}_sandbox_cgroup" "$cg"
	fact "${3}_sandbox_current" "$cur"
	fact "${3}_total_memory" "$(flag_of "$pid" total-memory)"
	fact "${3}_runsc_cgroups" "$(kube_runsc_cgroups "$1")"
}

# kube_diag WHAT: what the cluster shows when a wait for WHAT ran out, kept
# in the case's directory (kube-diag-*.txt) and named in the log.
kube_diag() {
	local f=$CASE_DIR/kube-diag-${1//[^a-z0-9-]/_}.txt
	{
		kubectl get pods -o wide
		kubectl describe pods
		kubectl get events --sort-by=.lastTimestamp
		crictl pods
		crictl ps -a
		tail -n 40 /var/log/kubelet.log
	} > "$f" 2>&1
	say "kube: waiting for $1 ran out; see $f"
}
