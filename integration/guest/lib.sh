# shellcheck shell=bash
# Guest-side helper library of the test bed, sourced by main.sh and by
# every scenario. It drives containerd through CRI the way kubelet does:
# pod cgroup first (a systemd slice with MemoryMax, or a cgroupfs
# directory), then RunPodSandbox with that cgroup parent and a runtime
# handler, then CreateContainer/StartContainer. It records what it
# observes as key=value "facts"; the assertions live on the host
# (integration/*_test.go).

SHARE=/mnt/share
GUEST=$SHARE/guest
RESULTS=$SHARE/results
# shellcheck source=/dev/null
[ -r $SHARE/knobs ] && . $SHARE/knobs
CG=/sys/fs/cgroup
# CGV: this boot's cgroup version. The v1 run (scenario 13) boots with
# systemd.unified_cgroup_hierarchy=0 (integration/run.sh).
if [ -e $CG/cgroup.controllers ]; then CGV=2; else CGV=1; fi
IMAGE=docker.io/library/bbpause:1
IMAGE_TAR=/var/lib/testbed/bbpause.tar
MiB=1048576
LIMIT=$((256 * MiB)) # every workload's memory limit: 256Mi
GUARD_BIN=/usr/local/bin/containerd-shim-runsc-guard-v1
GUARD_CONFIG=/etc/containerd/runsc-guard.toml # read by the guard at every start
TOOLS=/opt/testbed # the read-only tools disk: runsc-new, the gVisor shim, ...
CTRD_STATE=/run/containerd # the 1.6 default; 1.7 and 2.x use their own (use_containerd)

# The seed's two workloads, for busybox sh (no bash or python in the image).
# WL_DOUBLER is the seed's bash string doubler, bounded at 2^26 * 4 bytes
# (a 256 MiB string) so a RED run ends instead of eating the VM.
WL_DOUBLER='x=data; i=0; while [ $i -lt 26 ]; do x="$x$x"; i=$((i+1)); echo "i=$i len=${#x}"; done; echo WORKLOAD-SURVIVED'
# WL_ALLOC allocates 1 GiB of anonymous memory, as the seed's python
# allocator: busybox dd mallocs one bs-sized buffer (an anonymous mmap) and
# read() from /dev/zero writes every page of it.
WL_ALLOC='echo allocating 1 GiB; dd if=/dev/zero of=/dev/null bs=1073741824 count=1 && echo WORKLOAD-SURVIVED'

# cg_mem PATH FILE: the memory file of cgroup PATH named by its cgroup v2
# name (max, peak, current, events) or, on v1, the file that holds the same
# (memory.limit_in_bytes, memory.max_usage_in_bytes, memory.usage_in_bytes,
# memory.oom_control, whose "oom_kill N" line matches v2's events).
cg_mem() {
	local f=$2
	if [ "$CGV" = 2 ]; then
		echo "$CG$1/memory.$f"
		return
	fi
	case $f in
	max) f=limit_in_bytes ;;
	peak) f=max_usage_in_bytes ;;
	current) f=usage_in_bytes ;;
	events) f=oom_control ;;
	esac
	echo "$CG/memory$1/memory.$f"
}

# say: a progress line, on the console (the host echoes "TB:" lines) and,
# from a scenario, in its log too.
say() {
	local line="TB: ${SCENARIO:+[$SCENARIO] }$*"
	if [ -t 1 ]; then echo "$line"; else echo "$line" | tee -a /dev/ttyS0; fi
}
die() {
	say "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------- facts --

# fact KEY VALUE: appends to the current case's facts file (one line: any
# newline in VALUE becomes a space).
fact() { printf '%s=%s\n' "$1" "${2//$'\n'/ }" >> "$FACTS"; }

# begin_case NAME: starts a new facts file results/<scenario>/<NAME>.facts.
begin_case() {
	CASE=$1
	CASE_DIR=$RESULTS/$SCENARIO/$CASE
	mkdir -p "$CASE_DIR"
	FACTS=$RESULTS/$SCENARIO/$CASE.facts
	: > "$FACTS"
	fact scenario "$SCENARIO"
	fact case "$CASE"
	CASE_START=$(date +%s)
	say "case $CASE"
}

end_case() { fact seconds $(($(date +%s) - CASE_START)); }

# wait_until SECONDS CMD...: polls CMD every second; fact-free.
wait_until() {
	local limit=$1 t0=$SECONDS
	shift
	while [ $((SECONDS - t0)) -lt "$limit" ]; do
		"$@" && return 0
		sleep 1
	done
	return 1
}

# ------------------------------------------------------------ machine --

# setup_guest: one-time preparation after boot (main.sh).
setup_guest() {
	local b
	# The stock scenarios on containerd 1.6 need the image's compat shim.
	[ -x /usr/local/bin/containerd-shim-runsc-compat-v1 ] ||
		die "the VM image lacks /usr/local/bin/containerd-shim-runsc-compat-v1 (integration/image/overlay)"
	reset_node
	# Old runsc, given a slice path without systemd-cgroup, creates
	# system.slice/<path> and writes every root controller (hugetlb, rdma,
	# misc too) into system.slice's subtree_control, which fails with
	# ENOENT until something has enabled them at the root
	# (docs/upstream.md#placement). Enable them all, so RED does not depend on boot order.
	if [ "$CGV" = 2 ]; then
		for b in $(cat $CG/cgroup.controllers); do
			echo "+$b" > $CG/cgroup.subtree_control
		done
	fi
	write_runsc_options
	printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 180\n' > /etc/crictl.yaml
}

# reset_node: the node as every scenario starts on it (main.sh calls it
# before each one, so a scenario that changes it cannot leak): the test-bed
# binaries on PATH, the guard installed, the guard on its defaults.
reset_node() {
	local b
	for b in runsc-new containerd-shim-runsc-v1 containerd17 ctr17 containerd2 ctr2 crictl; do
		rm -f "/usr/local/bin/$b"
		ln -s "$TOOLS/$b" "/usr/local/bin/$b"
	done
	if [ -x "$SHARE/bin/containerd-shim-runsc-guard-v1" ]; then
		install -m 0755 "$SHARE/bin/containerd-shim-runsc-guard-v1" "$GUARD_BIN"
	fi
	rm -f "$GUARD_CONFIG"
}

# guard_config LINE...: writes the guard's configuration file.
guard_config() {
	printf '%s\n' "$@" > "$GUARD_CONFIG"
}

# plain_node_shim: makes the containerd-shim-runsc-v1 on PATH one that
# containerd 1.6 can start, as on a node whose gVisor shim is of 1.6's era:
# the compat wrapper (image/overlay) around the 2026 shim. A handler can
# then use gVisor's own runtime_type, io.containerd.runsc.v1, the one
# install.sh switches. reset_node undoes it.
plain_node_shim() {
	rm -f /usr/local/bin/containerd-shim-runsc-v1
	sed "s|^REAL=.*|REAL=$TOOLS/containerd-shim-runsc-v1|" /usr/local/bin/containerd-shim-runsc-compat-v1 \
		> /usr/local/bin/containerd-shim-runsc-v1
	chmod 0755 /usr/local/bin/containerd-shim-runsc-v1
}

vm_ram() { echo $(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024)); }

# --------------------------------------------------- runtime handlers --

# The runsc options files (the shim's ConfigPath): which runsc binary and
# which runsc flags ([runsc_config]). network=none: pods use the host
# network and no CNI is installed.
write_runsc_options() {
	local name bin
	mkdir -p /etc/containerd
	for name in deb new; do
		case $name in
		deb) bin=/usr/bin/runsc ;; # Debian's 0.0~20221219: before gVisor #9631
		new) bin=/usr/local/bin/runsc-new ;; # gVisor 20260905, static
		esac
		printf 'binary_name = "%s"\n[runsc_config]\n  network = "none"\n' "$bin" \
			> "/etc/containerd/runsc-$name.toml"
		cp "/etc/containerd/runsc-$name.toml" "/etc/containerd/runsc-$name-sd.toml"
		echo '  systemd-cgroup = "true"' >> "/etc/containerd/runsc-$name-sd.toml"
	done
}

# Runtime handlers, as NAME:ROLE:OPTIONS (options file runsc-OPTIONS.toml):
#   stock-*  the gVisor shim as shipped (on 1.6 through the compat wrapper)
#   guard-*  the same options behind runsc-guard
# A scenario may set HANDLERS to its own list before use_containerd.
HANDLERS="stock-deb:stock:deb stock-new:stock:new stock-deb-sd:stock:deb-sd
guard-deb:guard:deb guard-deb-sd:guard:deb-sd guard-new:guard:new guard-new-sd:guard:new-sd"

# runtime_type VERSION ROLE
runtime_type() {
	case $2 in
	guard) echo io.containerd.runsc-guard.v1 ;;
	# containerd 1.6 cannot parse the 2026 shim's JSON start reply; the
	# compat wrapper converts it (docs/upstream.md#start-reply). 1.7 and 2.x parse it.
	stock) [ "$1" = 1.6 ] && echo io.containerd.runsc-compat.v1 || echo io.containerd.runsc.v1 ;;
	# gVisor's own runtime type, as on a real node (see plain_node_shim).
	node) echo io.containerd.runsc.v1 ;;
	esac
}

# handler_field HANDLER JQ: a field of the handler as the running
# containerd reports it (crictl info), e.g. .runtimeType.
handler_field() {
	crictl info 2> /dev/null | jq -r --arg h "$1" ".config.containerd.runtimes[\$h]$2 // empty"
}

# handler_runsc HANDLER: the runsc column of the report, from the name
# of the handler's options file (runsc-OPTIONS.toml) or else its own.
handler_runsc() {
	local opts
	opts=$(basename "$(handler_field "$1" .options.ConfigPath)" .toml)
	case ${opts:-$1} in
	*-deb) echo "debian-20221219" ;;
	*-deb-sd) echo "debian-20221219+sd" ;;
	*-new) echo "gvisor-20260905" ;;
	*-new-sd) echo "gvisor-20260905+sd" ;;
	*) echo "$1" ;;
	esac
}

# ---------------------------------------------------------- containerd --

# handler_tables PREFIX INDENT VERSION: the runtime table of each of
# $HANDLERS under PREFIX (the CRI runtimes table of the config version),
# indented by INDENT, with the runtime type for containerd VERSION.
handler_tables() {
	local h name role opts p=$1 i=$2
	for h in $HANDLERS; do
		IFS=: read -r name role opts <<< "$h"
		cat <<EOF
$i[$p.runtimes.$name]
$i  runtime_type = "$(runtime_type "$3" "$role")"
$i  [$p.runtimes.$name.options]
$i    TypeUrl = "io.containerd.runsc.v1.options"
$i    ConfigPath = "/etc/containerd/runsc-$opts.toml"
EOF
	done
}

# containerd_config_16 DRIVER [1.7]: config version 2 for Debian's
# containerd 1.6; with 1.7, the same for containerd 1.7.35 (built from the
# module, it reads version 2 alike) with its own root and state, the same
# socket, and the stock shim used directly.
containerd_config_16() {
	local p='plugins."io.containerd.grpc.v1.cri".containerd' v=${2:-1.6}
	echo "version = 2"
	[ "$v" = 1.6 ] || cat <<EOF
root = "/var/lib/containerd17"
state = "/run/containerd17"
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
	cat <<EOF
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE"
  [$p]
    default_runtime_name = "runc"
    [$p.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [$p.runtimes.runc.options]
        SystemdCgroup = $([ "$1" = systemd ] && echo true || echo false)
EOF
	handler_tables "$p" "    " "$v"
}

# containerd_config_24 DRIVER: config version 3 for containerd 2.4.2 (built
# from the module; docs/upstream.md#test-bed). Own root and state, same socket.
containerd_config_24() {
	local p="plugins.'io.containerd.cri.v1.runtime'.containerd"
	cat <<EOF
version = 3
root = "/var/lib/containerd2"
state = "/run/containerd2"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$IMAGE"
[$p]
  default_runtime_name = "runc"
  [$p.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [$p.runtimes.runc.options]
      SystemdCgroup = $([ "$1" = systemd ] && echo true || echo false)
EOF
	handler_tables "$p" "  " 2.4
}

CTRD_RUNNING=

# use_containerd VERSION DRIVER: makes containerd VERSION (1.6, 1.7 or 2.4) run
# with cgroup DRIVER (systemd or cgroupfs), restarting only on a change.
use_containerd() {
	local want="$1 $2"
	[ "$CTRD_RUNNING" = "$want" ] && return
	stop_containerd
	case $1 in
	1.6)
		containerd_config_16 "$2" > /etc/containerd/config.toml
		systemctl start containerd || die "containerd 1.6 did not start"
		CTRD_STATE=/run/containerd CTR=ctr
		;;
	1.7)
		containerd_config_16 "$2" 1.7 > /etc/containerd/config17.toml
		run_unit containerd17 || die "containerd 1.7 did not start"
		CTRD_STATE=/run/containerd17 CTR=ctr17
		;;
	2.4)
		containerd_config_24 "$2" > /etc/containerd/config2.toml
		run_unit containerd2 || die "containerd 2.4 did not start"
		CTRD_STATE=/run/containerd2 CTR=ctr2
		;;
	esac
	wait_cri || die "containerd $1 CRI does not answer"
	if ! crictl inspecti "$IMAGE" > /dev/null 2>&1; then
		$CTR -n k8s.io images import "$IMAGE_TAR" > /dev/null || die "image import failed"
	fi
	CTRD_RUNNING=$want
	say "containerd $(crictl version | awk '/RuntimeVersion/ {print $2}'), $2 cgroup driver"
}

# run_unit NAME: containerd17 or containerd2 (built from the module) as a
# transient unit; KillMode=process leaves the shims running when it stops,
# as Debian's containerd.service does.
run_unit() {
	local cfg=/etc/containerd/config17.toml
	[ "$1" = containerd2 ] && cfg=/etc/containerd/config2.toml
	systemd-run --unit="$1" -p Delegate=yes -p KillMode=process \
		-p LimitNOFILE=infinity -p TasksMax=infinity \
		"/usr/local/bin/$1" --config "$cfg"
}

# wait_cri: waits up to 60 s for CRI to answer.
wait_cri() {
	local i
	for i in $(seq 60); do
		crictl info > /dev/null 2>&1 && return 0
		sleep 1
	done
	return 1
}

# restart_containerd: stops and starts the running containerd as an
# operator's `systemctl restart containerd` does; the shims and pods keep
# running.
restart_containerd() {
	case ${CTRD_RUNNING%% *} in
	1.6) systemctl restart containerd ;;
	*)
		# A transient unit stays loaded while its shims keep its cgroup
		# populated (KillMode=process), so it is restarted in place; a
		# stop and a new systemd-run would find the unit still there.
		local unit=containerd17
		[ "${CTRD_RUNNING%% *}" = 2.4 ] && unit=containerd2
		systemctl restart "$unit"
		;;
	esac
	wait_cri
}

# The transient units of the kube scenarios (kube.sh starts them).
KUBE_UNITS="kube-etcd kube-apiserver kube-controller-manager kube-scheduler kubelet"

# stop_strays: what a scenario killed at its time limit leaves running
# (its EXIT trap did not finish): the cluster's units, so kubelet does not
# go on re-creating pods under the next scenario's containerd. main.sh
# calls it after every scenario; a scenario that ended cleanly left none.
stop_strays() {
	local u left=
	for u in $KUBE_UNITS; do
		systemctl is-active -q "$u" 2> /dev/null || continue
		left="$left $u"
		systemctl stop "$u" 2> /dev/null
	done
	systemctl reset-failed 2> /dev/null
	[ -z "$left" ] || say "stopped what scenario $1 left running:$left"
}

stop_containerd() {
	remove_all_pods
	systemctl stop containerd containerd17 containerd2 2> /dev/null
	systemctl reset-failed containerd17 containerd2 2> /dev/null
	CTRD_RUNNING=
}

# -------------------------------------------------------- pod cgroups --

# pod_cgroup_systemd UID LIMIT: the pod slice kubelet's systemd driver
# makes, as a transient unit over D-Bus (StartTransientUnit, what kubelet's
# libcontainer manager calls), with MemoryMax=LIMIT unless LIMIT is "max".
# Sets POD_PARENT (CRI cgroup_parent) and POD_CG (path under /sys/fs/cgroup).
pod_cgroup_systemd() {
	local uid=$1 limit=$2 unit props=(MemoryAccounting b true) i
	unit=kubepods-burstable-pod${uid//-/_}.slice
	[ "$limit" = max ] || props+=(MemoryMax t "$limit")
	busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
		org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))' \
		"$unit" replace $((${#props[@]} / 3 + 1)) Description s "testbed pod $uid" \
		"${props[@]}" 0 > /dev/null || die "StartTransientUnit $unit failed"
	POD_PARENT=$unit
	POD_CG=/kubepods.slice/kubepods-burstable.slice/$unit
	POD_UNIT=$unit
	for i in $(seq 50); do
		[ -e "$(cg_mem "$POD_CG" max)" ] && return
		sleep 0.2
	done
	die "pod slice $POD_CG did not appear"
}

# pod_cgroup_cgroupfs UID LIMIT: the pod cgroup kubelet's cgroupfs driver
# makes: /kubepods/burstable/pod<uid> with memory.max written directly.
pod_cgroup_cgroupfs() {
	local uid=$1 limit=$2 d
	POD_CG=/kubepods/burstable/pod$uid
	POD_PARENT=$POD_CG
	POD_UNIT=
	if [ "$CGV" = 1 ]; then
		# v1: the pod's directory in the hierarchies that carry a limit
		# (kubelet makes it in every one; runsc makes the rest).
		for d in memory cpu,cpuacct pids; do
			mkdir -p "$CG/$d$POD_CG"
		done
		[ "$limit" = max ] || echo "$limit" > "$(cg_mem "$POD_CG" max)"
		return
	fi
	for d in /kubepods /kubepods/burstable; do
		mkdir -p "$CG$d"
		echo "+memory +cpu +pids" > "$CG$d/cgroup.subtree_control"
	done
	mkdir -p "$CG$POD_CG"
	echo "$limit" > "$CG$POD_CG/memory.max"
}

remove_pod_cgroup() {
	if [ -n "$POD_UNIT" ]; then
		systemctl stop "$POD_UNIT" 2> /dev/null
		systemctl reset-failed "$POD_UNIT" 2> /dev/null
	elif [ "$CGV" = 1 ]; then
		rmdir "$CG"/*"$POD_CG" 2> /dev/null
	else
		rmdir "$CG$POD_CG" 2> /dev/null
	fi
	return 0
}

# ------------------------------------------------------------ CRI pods --

# err_summary FILE: the gist of a crictl error: the gRPC status message
# (from "desc = " on), else the last line.
err_summary() {
	local msg
	msg=$(sed -n 's/.*desc = \(.*\)" containerID=.*/\1/p; s/.*desc = \(.*\)"$/\1/p' "$1" | head -n1)
	[ -n "$msg" ] || msg=$(grep -v '^$' "$1" | tail -n1)
	echo "${msg:0:400}" | sed 's/\\"/"/g'
}

# run_pod NAME HANDLER [POD_RESOURCES_JSON [OVERHEAD_JSON [ATTEMPT]]]: RunPodSandbox
# with host network (no CNI here; kubelet sets no hostname for those) in
# POD_PARENT. Resources/overhead are what kubelet puts into
# LinuxPodSandboxConfig; containerd turns them into the
# io.kubernetes.cri.sandbox-* annotations. Sets POD_ID, POD_JSON.
run_pod() {
	local name=$1 handler=$2 res=${3:-null} overhead=${4:-null} attempt=${5:-0}
	POD_JSON=$CASE_DIR/pod.json
	jq -n --arg name "$name" --arg uid "$POD_UID" --arg parent "$POD_PARENT" \
		--argjson res "$res" --argjson overhead "$overhead" --argjson attempt "$attempt" '{
		metadata: {name: $name, namespace: "testbed", uid: $uid, attempt: $attempt},
		log_directory: "/var/log/pods/testbed_\($name)_\($uid)",
		linux: ({cgroup_parent: $parent,
			security_context: {namespace_options: {network: 2}}}
			+ (if $res then {resources: $res} else {} end)
			+ (if $overhead then {overhead: $overhead} else {} end))}' > "$POD_JSON"
	local t0=$SECONDS
	POD_ID=$(crictl runp --runtime "$handler" "$POD_JSON" 2> "$CASE_DIR/runp.err")
	fact runp_rc $?
	fact runp_seconds $((SECONDS - t0))
	fact runp_error "$(err_summary "$CASE_DIR/runp.err")"
	fact pod_id "$POD_ID"
	[ -n "$POD_ID" ]
}

# create_ctr NAME LIMIT CMD: CreateContainer in POD_ID running sh -c CMD with
# memory limit LIMIT bytes (0: none). Sets CTR_ID.
create_ctr() {
	local name=$1 limit=$2 cmd=$3 json=$CASE_DIR/ctr-$1.json
	jq -n --arg name "$name" --arg image "$IMAGE" --arg cmd "$cmd" \
		--argjson limit "$limit" '{
		metadata: {name: $name},
		image: {image: $image},
		command: ["/bin/sh", "-c", $cmd],
		log_path: "\($name).log",
		linux: ({security_context: {namespace_options: {network: 2}}}
			+ (if $limit > 0 then {resources: {memory_limit_in_bytes: $limit}} else {} end))}' > "$json"
	CTR_ID=$(crictl create "$POD_ID" "$json" "$POD_JSON" 2> "$CASE_DIR/create.err")
	fact create_rc $?
	fact create_error "$(err_summary "$CASE_DIR/create.err")"
	[ -n "$CTR_ID" ]
}

start_ctr() {
	crictl start "$1" > /dev/null 2> "$CASE_DIR/start.err"
	local rc=$?
	fact start_rc $rc
	fact start_error "$(err_summary "$CASE_DIR/start.err")"
	return $rc
}

ctr_field() { crictl inspect -o json "$1" 2> /dev/null | jq -r "$2"; }

# wait_ctr CID SECONDS: waits for the container to exit, sampling the
# sandbox cgroup's memory.peak (the cgroup may vanish with the sandbox).
wait_ctr() {
	local cid=$1 limit=$2 t0=$SECONDS state
	while [ $((SECONDS - t0)) -lt "$limit" ]; do
		state=$(ctr_field "$cid" .status.state)
		sample_sandbox_peak
		[ "$state" = CONTAINER_EXITED ] && return 0
		sleep 1
	done
	return 1
}

# --------------------------------------------------------- observation --

# procs_of ID...: "pid argv0" of the runsc processes (sandbox, gofers,
# helpers) whose command line names one of the IDs.
procs_of() {
	local p cmd id
	for p in /proc/[0-9]*; do
		cmd=$({ tr '\0' ' ' < "$p/cmdline"; } 2> /dev/null) || continue # it may exit meanwhile
		case $cmd in runsc* | */runsc* | exe*) ;; *) continue ;; esac
		for id in "$@"; do
			case $cmd in *"$id"*)
				echo "${p#/proc/} ${cmd%% *}"
				break
				;;
			esac
		done
	done
}

# cgroup_of PID [CONTROLLER]: PID's cgroup: the v2 path, or on v1 its path
# in CONTROLLER's hierarchy (default memory).
cgroup_of() {
	if [ "$CGV" = 2 ]; then
		sed -n 's/^0:://p' "/proc/$1/cgroup" 2> /dev/null
	else
		# "ID:CONTROLLERS:PATH", and PATH may hold colons (runsc's
		# literal slice:prefix:name directory).
		awk -v c="${2:-memory}" '{
			i = index($0, ":"); rest = substr($0, i + 1); j = index(rest, ":")
			n = split(substr(rest, 1, j - 1), a, ",")
			for (k = 1; k <= n; k++) if (a[k] == c) { print substr(rest, j + 1); exit }
		}' "/proc/$1/cgroup" 2> /dev/null
	fi
}

# flag_of PID NAME: the value of flag NAME on PID's command line, given as
# --NAME=V or as --NAME V (old runsc passes the latter).
flag_of() {
	tr '\0' '\n' < "/proc/$1/cmdline" | awk -v f="--$2" '
		found { print; exit }
		$0 == f { found = 1 }
		index($0, f "=") == 1 { print substr($0, length(f) + 2); exit }'
}

# record_sandbox: facts about the runsc-sandbox process of POD_ID, right
# after RunPodSandbox (it may be OOM-killed soon after the workload starts).
record_sandbox() {
	local pid
	pid=$(procs_of "$POD_ID" | awk '$2 == "runsc-sandbox" {print $1; exit}')
	fact sandbox_pid "$pid"
	[ -n "$pid" ] || return 0
	SANDBOX_CG=$(cgroup_of "$pid")
	fact sandbox_cgroup "$SANDBOX_CG"
	fact total_memory "$(flag_of "$pid" total-memory)"
	fact total_host_memory "$(flag_of "$pid" total-host-memory)"
	fact cpu_num "$(flag_of "$pid" cpu-num)"
	fact sandbox_cmdline "$(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-2000)"
	fact sandbox_cgroup_memory_max "$(cat "$(cg_mem "$SANDBOX_CG" max)" 2> /dev/null)"
	if [ "$CGV" = 1 ]; then
		fact sandbox_cgroup_cpu "$(cgroup_of "$pid" cpu)"
		fact sandbox_cgroup_pids "$(cgroup_of "$pid" pids)"
		fact sandbox_cgroup_systemd "$(cgroup_of "$pid" name=systemd)"
	fi
	local bundle=$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$POD_ID
	fact bundle "$bundle"
	if [ -r "$bundle/config.json" ]; then
		fact spec_memory_limit "$(jq -r '.linux.resources.memory.limit // ""' "$bundle/config.json")"
		fact spec_cgroups_path "$(jq -r '.linux.cgroupsPath // ""' "$bundle/config.json")"
		fact annotation_sandbox_memory "$(jq -r '.annotations["io.kubernetes.cri.sandbox-memory"] // ""' "$bundle/config.json")"
	fi
	SANDBOX_PEAK=
}

# record_gofers KEY: the cgroups of every runsc process of the pod, as fact
# KEY ("argv0=cgroup ..."). A process that exits between the listing and
# the read of its cgroup (an OOM-killed sandbox takes its gofers with it)
# is left out: an empty cgroup would read as "outside the pod".
record_gofers() {
	local pid name cg cgs=""
	while read -r pid name; do
		cg=$(cgroup_of "$pid")
		[ -n "$cg" ] && cgs="$cgs $name=$cg"
	done < <(procs_of "$POD_ID" "$CTR_ID")
	fact "$1" "${cgs# }"
}

# rss_of NAME: "KIB COUNT": the summed resident memory of the processes
# whose argv[0] is NAME (a path or a name), and how many there are.
rss_of() {
	ps -eo rss=,args= | awk -v n="$1" '{ k = split($2, a, "/") } a[k] == n { s += $1; c++ }
		END { printf "%d %d\n", s, c }'
}

# record_shim_rss: the resident memory of the guard and of the runsc shims,
# while only the current pod runs (facts rss_*_kb, procs_*).
record_shim_rss() {
	local kb n
	read -r kb n < <(rss_of containerd-shim-runsc-guard-v1)
	fact rss_guard_kb "$kb"
	fact procs_guard "$n"
	read -r kb n < <(rss_of containerd-shim-runsc-v1)
	fact rss_runsc_shim_kb "$kb"
	fact procs_runsc_shim "$n"
}

# sample NAME CMD...: runs CMD, keeps the command line and its output
# (stdout and stderr) as results/<scenario>/samples/NAME.txt, for the
# README to quote, and its exit status as fact NAME_rc.
sample() {
	local name=$1 file=$RESULTS/$SCENARIO/samples/$1.txt rc
	shift
	mkdir -p "${file%/*}"
	echo "\$ ${1##*/}${2:+ ${*:2}}" > "$file"
	"$@" >> "$file" 2>&1
	rc=$?
	echo "(exit status $rc)" >> "$file"
	fact "${name//-/_}_rc" $rc
}

sample_sandbox_peak() {
	local v
	[ -n "${SANDBOX_CG:-}" ] || return 0
	v=$(cat "$(cg_mem "$SANDBOX_CG" peak)" 2> /dev/null) || return 0
	[ -n "$v" ] && SANDBOX_PEAK=$v
}

# record_outcome CID: the container's CRI status, its log, and the pod and
# sandbox cgroups' memory accounting.
record_outcome() {
	local cid=$1 status
	status=$(crictl inspect -o json "$cid" 2> /dev/null)
	fact state "$(jq -r .status.state <<< "$status")"
	fact exit_code "$(jq -r .status.exitCode <<< "$status")"
	fact reason "$(jq -r .status.reason <<< "$status")"
	crictl logs "$cid" > "$CASE_DIR/ctr.log" 2>&1
	fact log_tail "$(grep -v '^$' "$CASE_DIR/ctr.log" | tail -n1 | cut -c1-120)"
	fact survived "$(grep -q WORKLOAD-SURVIVED "$CASE_DIR/ctr.log" && echo yes || echo no)"
	sample_sandbox_peak
	fact sandbox_peak "$SANDBOX_PEAK"
	fact sandbox_oom_kill "$(awk '$1 == "oom_kill" {print $2}' "$(cg_mem "${SANDBOX_CG:-/nonexistent}" events)" 2> /dev/null)"
	fact pod_cgroup "$POD_CG"
	fact pod_memory_max "$(cat "$(cg_mem "$POD_CG" max)" 2> /dev/null)"
	fact pod_peak "$(cat "$(cg_mem "$POD_CG" peak)" 2> /dev/null)"
	fact pod_oom_kill "$(awk '$1 == "oom_kill" {print $2}' "$(cg_mem "$POD_CG" events)" 2> /dev/null)"
}

# record_guard: copies the guard's audit record of the sandbox, if any.
# Called right after RunPodSandbox (the bundle, record included, is
# deleted as soon as the sandbox dies, e.g. OOM-killed) and again at the
# end, when a later version of the record may exist.
record_guard() {
	local rec=$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$POD_ID/runsc-guard.json
	if [ -s "$rec" ]; then
		cp "$rec" "$CASE_DIR/runsc-guard.json"
		fact guard_record yes
		fact guard_actions "$(jq -r '(.actions // []) | join("; ")' "$rec" 2>&1)"
		fact guard_outcome "$(jq -r '.outcome // ""' "$rec" 2>&1)"
	elif [ ! -s "$CASE_DIR/runsc-guard.json" ]; then
		fact guard_record no
	fi
}

# remove_pod: StopPodSandbox + RemovePodSandbox, then the pod cgroup; records
# any runsc or shim process still naming the pod.
remove_pod() {
	[ -n "${POD_ID:-}" ] || return 0
	local t0=$SECONDS
	crictl stopp "$POD_ID" > /dev/null 2>&1
	crictl rmp "$POD_ID" > /dev/null 2>&1
	fact remove_seconds $((SECONDS - t0))
	sleep 1
	fact leftover_processes "$(pgrep -af "$POD_ID" | grep -v pgrep | cut -c1-200 | tr '\n' ';')"
	# cgroups named for the pod's sandbox (runsc's, systemd's scope, the
	# guard's), still there after RemovePodSandbox.
	fact leftover_cgroups "$(find "$CG" -mindepth 1 -type d -name "*$POD_ID*" 2> /dev/null | sed "s|^$CG||" | tr '\n' ' ')"
	remove_pod_cgroup
	POD_ID=
}

# remove_all_pods: removes every pod (between scenarios).
remove_all_pods() {
	crictl info > /dev/null 2>&1 || return 0
	crictl rmp -fa > /dev/null 2>&1
	local u
	for u in $(systemctl list-units --plain --no-legend 'kubepods-burstable-pod*' | awk '{print $1}'); do
		systemctl stop "$u"
	done
	systemctl reset-failed 2> /dev/null
	rmdir $CG/kubepods/burstable/pod* $CG/*/kubepods/burstable/pod* 2> /dev/null
	return 0
}

# ---------------------------------------------------------- one case --

# case_facts HANDLER DRIVER: the facts that describe the set-up of a case.
# The runtime (guard or stock) is what containerd runs for the handler.
case_facts() {
	local rt
	rt=$(handler_field "$1" .runtimeType)
	fact handler "$1"
	fact runsc "$(handler_runsc "$1")"
	fact runtime_type "$rt"
	case $rt in
	io.containerd.runsc-guard.v1) fact runtime guard ;;
	"") fact runtime "${1%%-*}" ;;
	*) fact runtime stock ;;
	esac
	fact containerd "$(crictl version | awk '/RuntimeVersion/ {print $2}')"
	fact driver "$2"
	fact vm_ram "$(vm_ram)"
	[ -s "$GUARD_CONFIG" ] && fact guard_config "$(cat "$GUARD_CONFIG")"
	return 0
}

# run_workload CASE HANDLER WORKLOAD [KEY=VALUE...]: the whole kubelet-like
# life of a one-container pod, recording facts throughout. Options:
#   driver=systemd|cgroupfs  pod cgroup driver (default systemd)
#   pod_limit=BYTES|max      pod cgroup memory limit (default $LIMIT)
#   ctr_limit=BYTES          container memory limit, 0 = none (default $LIMIT)
#   pod_resources=JSON       LinuxPodSandboxConfig.resources (default: ctr_limit)
#   overhead=JSON            LinuxPodSandboxConfig.overhead (RuntimeClass)
#   wait=SECONDS             how long the workload may run (default 300)
#   before_start=CMD         run after CreateContainer, before StartContainer
#   after_start=CMD          run right after StartContainer succeeded
#   keep=1                   leave the pod running (and the case open): the
#                            scenario ends it with end_workload
run_workload() {
	local case=$1 handler=$2 cmd=$3
	shift 3
	local driver=systemd pod_limit=$LIMIT ctr_limit=$LIMIT pod_resources="" overhead=null wait=300
	local before_start=: after_start=: keep=0 kv
	for kv in "$@"; do local "$kv"; done
	[ -n "$pod_resources" ] || pod_resources="{\"memory_limit_in_bytes\": $ctr_limit}"
	[ "$ctr_limit" = 0 ] && [ "$pod_resources" = '{"memory_limit_in_bytes": 0}' ] && pod_resources=null

	begin_case "$case"
	case_facts "$handler" "$driver"
	fact workload "$(case $cmd in "$WL_DOUBLER") echo doubler ;; "$WL_ALLOC") echo alloc-1GiB ;; *) echo custom ;; esac)"
	fact limit "$ctr_limit"
	POD_UID=$(cat /proc/sys/kernel/random/uuid)
	"pod_cgroup_$driver" "$POD_UID" "$pod_limit"
	if run_pod "$case" "$handler" "$pod_resources" "$overhead"; then
		record_sandbox
		record_guard
		if create_ctr app "$ctr_limit" "$cmd"; then
			record_gofers runsc_process_cgroups
			$before_start
			local rc=1
			if start_ctr "$CTR_ID"; then
				# Where runsc put what it started with the container
				# (old runsc starts an app container's gofer only now).
				record_gofers runsc_process_cgroups_started
				$after_start
				wait_ctr "$CTR_ID" "$wait"
				rc=$?
			fi
			fact finished $rc
			record_outcome "$CTR_ID"
		fi
		record_guard
	fi
	[ "$keep" = 1 ] || end_workload
}

# end_workload: ends the case run_workload started: the kernel's OOM lines
# and the guard's log lines of the case, then the pod removed.
end_workload() {
	dmesg | grep -iE 'out of memory|oom-kill|killed process' > "$CASE_DIR/dmesg-oom.txt"
	dmesg -C
	journalctl -q --no-pager -u containerd -u containerd17 -u containerd2 --since "@$CASE_START" |
		grep -i guard > "$CASE_DIR/guard-log.txt"
	remove_pod
	end_case
	say "  -> $(grep -E '^(sandbox_cgroup|total_memory|reason|survived|pod_peak|start_error)=.' "$FACTS" | tr '\n' ' ')"
}

# red_and_green [alloc]: scenarios 1 and 2 on the containerd in use: the
# seed's two workloads (with alloc, its 1 GiB allocation alone) on the
# stock shim with Debian's runsc, then behind the guard.
red_and_green() {
	[ "${1:-}" = alloc ] || run_workload red-doubler stock-deb "$WL_DOUBLER"
	run_workload red-alloc stock-deb "$WL_ALLOC"
	requires_guard
	[ "${1:-}" = alloc ] || run_workload green-doubler guard-deb "$WL_DOUBLER"
	run_workload green-alloc guard-deb "$WL_ALLOC"
}

# audit_case NAME: the audit as an operator reads it (sample NAME, fact
# NAME_rc) and as JSON for the assertions (the case's NAME.json).
audit_case() {
	sample "$1" containerd-shim-runsc-guard-v1 audit
	containerd-shim-runsc-guard-v1 audit --json > "$CASE_DIR/$1.json" 2> "$CASE_DIR/$1.err"
}

# requires_guard: skips the scenario (recorded) when no guard binary came.
requires_guard() {
	if [ ! -x "$GUARD_BIN" ]; then
		echo "guard binary not delivered (it did not build)" > "$RESULTS/$SCENARIO/skipped"
		say "skipped: no guard binary"
		exit 0
	fi
}
