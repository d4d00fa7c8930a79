#!/usr/bin/env bash
# run.sh: the seed's two memory eaters on a minikube cluster with the gvisor
# addon, behind runsc-guard installed by install.sh; asserts both are
# OOM-killed at their 256Mi limit and the pod cgroup's peak stays bounded.
#
# Needs minikube, kubectl, go and the network (the addon downloads runsc),
# so it is not part of CI. Exit status: 0 passed, or skipped with a line
# starting "SKIP:" when a requirement is missing (set MINIKUBE_E2E_REQUIRED=1
# to turn a skip into exit 3); 1 an assertion failed.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
profile=${MINIKUBE_PROFILE:-runsc-guard-e2e}
ns=runsc-guard-e2e
limit=$((256 * 1024 * 1024))
# Slack over the limit for the pod cgroup's peak: kernel accounting of the
# sandbox's page tables and the gofers. 32Mi is far below the 1GiB and the
# unbounded growth the eaters reach when the limit does not hold.
margin=$((32 * 1024 * 1024))
keep=${KEEP_CLUSTER:-0}

skip() {
	echo "SKIP: $*"
	[[ ${MINIKUBE_E2E_REQUIRED:-0} == 1 ]] && exit 3
	exit 0
}
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

command -v minikube >/dev/null || skip "minikube not installed (https://minikube.sigs.k8s.io/docs/start/)"
command -v kubectl >/dev/null || skip "kubectl not installed"
command -v go >/dev/null || skip "go not installed (needed to build the guard)"
curl -fsS --max-time 10 -o /dev/null https://storage.googleapis.com/gvisor/releases/release/latest/x86_64/runsc.sha512 ||
	skip "no network: the gvisor addon downloads runsc from storage.googleapis.com"

kc() { kubectl --context "$profile" "$@"; }
node() { minikube -p "$profile" ssh -- "$@"; }

echo "== minikube start (containerd, gvisor addon)"
read -r -a extra <<<"${MINIKUBE_START_ARGS:-}"
minikube start -p "$profile" --container-runtime=containerd --addons=gvisor --memory=4g --cpus=2 "${extra[@]}"
cleanup() {
	kc delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
	[[ $keep == 1 ]] || minikube delete -p "$profile" >/dev/null 2>&1 || true
}
trap cleanup EXIT
kc -n kube-system wait pod/gvisor --for=condition=Ready --timeout=5m
for _ in $(seq 60); do kc get runtimeclass gvisor >/dev/null 2>&1 && break; sleep 5; done
kc get runtimeclass gvisor >/dev/null || fail "RuntimeClass gvisor did not appear"

echo "== build the guard and install it on the node"
arch=$(node uname -m | tr -d '\r')
case $arch in
x86_64) goarch=amd64 ;;
aarch64) goarch=arm64 ;;
*) fail "node architecture $arch not supported" ;;
esac
build=$(mktemp -d)
(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -o "$build/containerd-shim-runsc-guard-v1" ./cmd/containerd-shim-runsc-guard-v1)
node mkdir -p /tmp/runsc-guard
minikube -p "$profile" cp "$build/containerd-shim-runsc-guard-v1" /tmp/runsc-guard/containerd-shim-runsc-guard-v1
minikube -p "$profile" cp "$repo/install.sh" /tmp/runsc-guard/install.sh
node chmod +x /tmp/runsc-guard/install.sh /tmp/runsc-guard/containerd-shim-runsc-guard-v1
echo "-- audit before (exit status ignored)"
node sudo /tmp/runsc-guard/containerd-shim-runsc-guard-v1 audit || true
node sudo /tmp/runsc-guard/install.sh --binary /tmp/runsc-guard/containerd-shim-runsc-guard-v1 --restart
# Restarting containerd restarts nothing that runs, but give the API a moment.
kc wait node --all --for=condition=Ready --timeout=2m

echo "== the seed's Deployments"
kc create namespace "$ns"
eater() { # name command args
	cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: $ns, labels: {app: $1}}
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      runtimeClassName: gvisor
      restartPolicy: Always
      containers:
      - name: eater
        image: python:3.12-bookworm
        command: [$2]
        args: ["-c", "$3"]
        securityContext: {readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 999}
        resources:
          limits: {cpu: 100m, memory: 256Mi}
          requests: {cpu: 100m, memory: 200Mi}
YAML
}
# The $ are for the container's bash; \" is YAML's escaped quote.
# shellcheck disable=SC2016
eater memory-eater-bash bash 'big_var=data; while true; do big_var=\"$big_var$big_var\"; done; sleep 2d' | kc apply -f -
eater memory-eater-python python "big_list = []; print('Allocating 1GB of memory...'); [big_list.append(' ' * 10**6) for _ in range(1000)]; import time; time.sleep(100000)" | kc apply -f -

failed=0
for app in memory-eater-bash memory-eater-python; do
	echo "== $app"
	reason=""
	for _ in $(seq 120); do
		reason=$(kc -n "$ns" get pod -l "app=$app" -o jsonpath='{.items[0].status.containerStatuses[0].lastState.terminated.reason}{.items[0].status.containerStatuses[0].state.terminated.reason}' 2>/dev/null || true)
		[[ $reason == *OOMKilled* ]] && break
		sleep 5
	done
	uid=$(kc -n "$ns" get pod -l "app=$app" -o jsonpath='{.items[0].metadata.uid}')
	# The pod cgroup: kubepods.slice/...-pod<uid_>.slice (systemd driver)
	# or kubepods/<qos>/pod<uid> (cgroupfs, minikube's default).
	peak=$(node "sudo sh -c 'd=\$(find /sys/fs/cgroup -maxdepth 5 -type d \\( -name \"*pod$uid\" -o -name \"*pod${uid//-/_}.slice\" \\) | head -1); cat \$d/memory.peak 2>/dev/null || cat \$d/memory.max_usage_in_bytes'" | tr -d '\r')
	echo "termination reason: ${reason:-none}; pod cgroup peak: ${peak:-unknown} bytes (limit $limit)"
	if [[ $reason != *OOMKilled* ]]; then
		echo "FAIL: $app was not OOM-killed within 10 minutes" >&2
		failed=1
	fi
	if [[ ! $peak =~ ^[0-9]+$ ]] || ((peak > limit + margin)); then
		echo "FAIL: $app pod cgroup peak ${peak:-unknown} is above $limit + $margin" >&2
		failed=1
	fi
done

echo "== audit after"
node sudo containerd-shim-runsc-guard-v1 audit || failed=1
[[ $failed == 0 ]] || fail "see above"
echo "PASS: both eaters OOM-killed at 256Mi behind runsc-guard"
