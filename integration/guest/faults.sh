# shellcheck shell=bash
# faults.sh: the lifecycle faults containerd's own shims are tested
# against (containerd integration/restart_test.go, restart_linux_test.go,
# the issue7496 shim-leak tests, sandbox_run_rollback_test.go), each run on
# the stock shim and behind the guard in the same boot, so the guard's
# outcome can be compared with stock's. Sourced by scenarios 11 and 12.
#
# Every case ends with the pod removed and records what is left: processes
# naming the pod or its containers, and cgroups named for the sandbox.

# bundle_of ID: the container's bundle under the running containerd.
bundle_of() { echo "$CTRD_STATE/io.containerd.runtime.v2.task/k8s.io/$1"; }

# shim_pid ID: the runsc shim serving container ID (runsc's start writes
# shim.pid into the bundle).
shim_pid() { cat "$(bundle_of "$1")/shim.pid" 2> /dev/null; }

# guard_pid: the guard server of POD_ID.
guard_pid() { pgrep -f "containerd-shim-runsc-guard-v1 .*-id $POD_ID .*serve" | head -n1; }

pod_state() { crictl inspectp -o json "$1" 2> /dev/null | jq -r '.status.state // empty'; }

ctr_exited() { [ "$(ctr_field "$1" .status.state)" = CONTAINER_EXITED ]; }

job_done() { ! kill -0 "$1" 2> /dev/null; }

# begin_pod_case CASE HANDLER LIMIT: a case with a new pod slice of LIMIT.
begin_pod_case() {
	begin_case "$1"
	case_facts "$2" systemd
	POD_UID=$(cat /proc/sys/kernel/random/uuid)
	pod_cgroup_systemd "$POD_UID" "$3"
	A= B=
}

# two_containers CASE HANDLER: a pod (512Mi slice) with two long-running
# containers A and B. Sets A, B.
two_containers() {
	begin_pod_case "$1" "$2" $((512 * MiB))
	run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $((512 * MiB))}" || return 1
	record_sandbox
	create_ctr a $LIMIT 'exec sleep 3600' && start_ctr "$CTR_ID" || return 1
	A=$CTR_ID
	create_ctr b $LIMIT 'exec sleep 3600' && start_ctr "$CTR_ID" || return 1
	B=$CTR_ID
}

# after_fault: the state containerd reports once the fault settled.
after_fault() {
	fact pod_state "$(pod_state "$POD_ID")"
	[ -n "$A" ] && fact a_state "$(ctr_field "$A" .status.state)"
	[ -n "$B" ] && fact b_state "$(ctr_field "$B" .status.state)"
	[ -n "$B" ] && fact b_exec "$(crictl exec "$B" /bin/echo exec-ok 2>&1 | tr '\n' ' ' | cut -c1-200)"
}

# left_of IDS: processes whose command line names one of IDS ("a|b"); none
# for no ids.
left_of() {
	[ -n "$1" ] || return 0
	pgrep -af "$1" | grep -v pgrep | cut -c1-200 | tr '\n' ';'
}

# end_fault: removes the pod and records what is left of it.
end_fault() {
	local ids="$POD_ID${A:+|$A}${B:+|$B}"
	ids=${ids#|}
	remove_pod
	fact leftover_any "$(left_of "$ids")"
	journalctl -q --no-pager -u containerd -u containerd2 --since "@$CASE_START" > "$CASE_DIR/containerd.log"
	fact guard_errors "$(grep -cE 'level=error.*runsc-guard|runsc-guard.*level=error' "$CASE_DIR/containerd.log")"
	end_case
	say "  -> $(grep -E '^(pod_state|a_state|b_state|b_exec|leftover_any)=' "$FACTS" | tr '\n' ' ')"
}

# (a) one app container removed, then containerd restarted: the rest of
# the pod must keep running and answer exec.
fault_remove_restart() {
	two_containers "$1" "$2" && {
		crictl stop -t 5 "$A" > /dev/null 2>&1
		crictl rm "$A" > /dev/null 2>&1
		fact rm_a_rc $?
		A=
		sleep 2
		# Before the restart: B as containerd sees it, and whether the
		# sandbox still runs.
		fact b_state_before_restart "$(ctr_field "$B" .status.state)"
		fact sandbox_alive_before_restart "$(procs_of "$POD_ID" | grep -c runsc-sandbox)"
		restart_containerd
		fact restart_rc $?
		sleep 5
	}
	after_fault
	end_fault
}

# (b) the shim process(es) of a running pod killed with SIGKILL: behind
# the guard, the guard server; stock, every runsc shim of the pod (the
# processes in the guard's place). containerd must see the containers exit.
fault_kill_shim() {
	two_containers "$1" "$2" && {
		local pids
		if [ "$(handler_field "$2" .runtimeType)" = io.containerd.runsc-guard.v1 ]; then
			pids=$(guard_pid)
		else
			pids="$(shim_pid "$POD_ID") $(shim_pid "$A") $(shim_pid "$B")"
		fi
		fact killed "$pids"
		# shellcheck disable=SC2086
		kill -9 $pids
		wait_until 90 ctr_exited "$B"
		fact b_exited_rc $?
	}
	after_fault
	end_fault
}

# (c) one runsc shim killed with SIGKILL: that of app container A.
# containerd must learn that A exited; the rest of the pod fares as with
# the stock shim.
fault_kill_runsc_shim() {
	two_containers "$1" "$2" && {
		fact killed "$(shim_pid "$A")"
		kill -9 "$(shim_pid "$A")"
		wait_until 90 ctr_exited "$A"
		fact a_exited_rc $?
		sleep 3
	}
	after_fault
	end_fault
}

# (d) containerd restarted while RunPodSandbox is creating the sandbox.
fault_restart_during_create() {
	begin_pod_case "$1" "$2" $LIMIT
	run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $LIMIT}" &
	local runp=$!
	sleep "${RESTART_AFTER:-2}"
	restart_containerd
	fact restart_rc $?
	# The interrupted RunPodSandbox may hang until crictl's timeout: give
	# it 60 s, as kubelet's runtime request timeout would, then move on.
	wait_until 60 job_done "$runp" || kill "$runp" 2> /dev/null
	wait "$runp" 2> /dev/null
	POD_ID=$(crictl pods --name "$1" -q | head -n1)
	fact pods_after "$(crictl pods --name "$1" -o json | jq -r '[.items[].state] | join(",")')"
	# What kubelet does next: it removes the pod it gave up on and runs a
	# new sandbox, attempt 1 (CRI reserves the name per attempt).
	local old=$POD_ID
	crictl pods --name "$1" -q | xargs -r timeout 60 crictl stopp > /dev/null 2>&1
	crictl pods --name "$1" -q | xargs -r timeout 60 crictl rmp > /dev/null 2>&1
	run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $LIMIT}" null 1
	fact retry_rc $?
	record_sandbox
	after_fault
	[ "$old" = "$POD_ID" ] && old=
	remove_pod
	# What is left of the pod whose creation the restart interrupted:
	# upstream containerd loses track of its shim (the issue7496 family),
	# with the stock shim too. Recorded, then ended like an operator would,
	# so later cases start clean.
	if [ -n "$old" ] && [ "$old" != "$POD_ID" ]; then
		fact leftover_lost "$(left_of "$old")"
		fact leftover_lost_runsc_shims "$(pgrep -fc "containerd-shim-runsc-v1 .*$old")"
		fact leftover_lost_sandboxes "$(procs_of "$old" | grep -c runsc-sandbox)"
		pkill -9 -f "$old"
	fi
	end_case
	say "  -> $(grep -E '^(pods_after|retry_rc|pod_state|leftover_any|leftover_lost)=' "$FACTS" | tr '\n' ' ')"
}

# (e) N pods created at once behind the guard, each with its own limit
# (200Mi + 8Mi * i): each sandbox booted with its pod's limit and sits in
# its pod slice.
fault_many_pods() {
	local n=$3 i pids=() uid before
	begin_case "$1"
	case_facts "$2" systemd
	before=$(pgrep -f 'runsc-sandbox|runsc-gofer|containerd-shim-runsc' | sort)
	for i in $(seq "$n"); do
		uid=$(cat /proc/sys/kernel/random/uuid)
		pod_cgroup_systemd "$uid" $(((200 + 8 * i) * MiB))
		echo "$POD_CG" > "$CASE_DIR/cg-$i"
		(
			POD_UID=$uid CASE_DIR=$CASE_DIR/$i FACTS=/dev/null
			mkdir -p "$CASE_DIR"
			run_pod "many-$i" "$2" "{\"memory_limit_in_bytes\": $(((200 + 8 * i) * MiB))}" > /dev/null
			echo "$POD_ID" > "$CASE_DIR/pod-id"
		) &
		pids+=($!)
	done
	wait "${pids[@]}"
	local ok=0 pid id cg got=""
	for i in $(seq "$n"); do
		id=$(cat "$CASE_DIR/$i/pod-id" 2> /dev/null)
		cg=$(cat "$CASE_DIR/cg-$i")
		pid=$(procs_of "${id:-none}" | awk '$2 == "runsc-sandbox" {print $1; exit}')
		if [ -n "$pid" ] && [ "$(flag_of "$pid" total-memory)" = $(((200 + 8 * i) * MiB)) ] &&
			[[ "$(cgroup_of "$pid")" == "$cg/"* ]]; then
			ok=$((ok + 1))
		else
			got="$got $i:${id:0:12}:$(flag_of "${pid:-0}" total-memory 2> /dev/null):$(cgroup_of "${pid:-0}")"
		fi
	done
	fact pods "$n"
	fact pods_right "$ok"
	fact pods_wrong "${got# }"
	fact rss_guard "$(rss_of containerd-shim-runsc-guard-v1)"
	fact rss_runsc_shim "$(rss_of containerd-shim-runsc-v1)"
	local t0=$SECONDS left
	crictl rmp -fa > /dev/null 2> "$CASE_DIR/rmp.err"
	fact rmp_rc $?
	fact rmp_error "$(err_summary "$CASE_DIR/rmp.err")"
	# Removing many gVisor pods takes containerd 2.4 a while under TCG: wait
	# for them to go (removing again what is still listed), then count.
	new_runsc() { comm -13 <(echo "$before") <(pgrep -f 'runsc-sandbox|runsc-gofer|containerd-shim-runsc' | sort); }
	gone_all() {
		[ -z "$(new_runsc)" ] && [ -z "$(crictl pods -q)" ] && return 0
		crictl rmp -fa > /dev/null 2>&1
		return 1
	}
	wait_until 180 gone_all
	fact remove_seconds $((SECONDS - t0))
	fact pods_listed_after "$(crictl pods -q | wc -l)"
	left=$(new_runsc)
	fact leftover_runsc "$(for p in $left; do tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null | cut -c1-160; echo ';'; done | tr -d '\n')"
	remove_all_pods
	end_case
	say "  -> $(grep -E '^(pods_right|pods_wrong|leftover_runsc)=' "$FACTS" | tr '\n' ' ')"
}

# (f) the pod removed while its workload is being OOM-killed, as kubelet
# removes a pod: StopPodSandbox, then RemovePodSandbox; when either fails,
# both again a second later (kubelet's next sync does the same). Facts
# stopp_rc/_error, rmp_rc/_error of the first attempt, retry_stopp_rc and
# retry_rmp_rc of the second (absent when the first succeeded).
#
# On containerd 1.6 the first attempt may meet containerd still deleting
# the OOM-killed task: StopPodSandbox's Kill then fails with "ttrpc:
# closed" (containerd closes its shim connection after the task's Delete
# and Shutdown while the Kill is in flight), or a Stop that returned
# success is followed by "pod sandbox ... is running, please stop it
# first" from the Remove. Both are containerd's own races (the class of
# https://github.com/containerd/containerd/pull/12387), seen with the stock
# shim and behind the guard.
fault_remove_during_oom() {
	begin_pod_case "$1" "$2" $LIMIT
	if run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $LIMIT}"; then
		record_sandbox
		create_ctr alloc $LIMIT "$WL_ALLOC" && start_ctr "$CTR_ID" && A=$CTR_ID
		sleep "${OOM_AFTER:-3}"
		local t0=$SECONDS
		if ! stop_remove_pod ""; then
			sleep 1
			stop_remove_pod retry_
		fi
		fact remove_seconds $((SECONDS - t0))
		fact pod_listed "$(crictl pods -q | grep -c "^$POD_ID")"
	fi
	end_fault
}

# stop_remove_pod PREFIX: crictl stopp, then rmp, of POD_ID; facts
# PREFIXstopp_rc, PREFIXstopp_error, PREFIXrmp_rc, PREFIXrmp_error. Fails
# when either failed.
stop_remove_pod() {
	local p=$1 stop rm
	crictl stopp "$POD_ID" > /dev/null 2> "$CASE_DIR/${p}stopp.err"
	stop=$?
	fact "${p}stopp_rc" $stop
	fact "${p}stopp_error" "$(err_summary "$CASE_DIR/${p}stopp.err")"
	crictl rmp "$POD_ID" > /dev/null 2> "$CASE_DIR/${p}rmp.err"
	rm=$?
	fact "${p}rmp_rc" $rm
	fact "${p}rmp_error" "$(err_summary "$CASE_DIR/${p}rmp.err")"
	[ $stop = 0 ] && [ $rm = 0 ]
}

# fault_table: every fault on the stock shim and behind the guard, on the
# containerd in use (2026 runsc, which both run the same way).
fault_table() {
	local h
	for h in stock-new guard-new; do
		fault_remove_restart "remove-restart-${h%%-*}" "$h"
		fault_kill_shim "kill-shim-${h%%-*}" "$h"
		fault_kill_runsc_shim "kill-runsc-shim-${h%%-*}" "$h"
		fault_restart_during_create "restart-create-${h%%-*}" "$h"
		fault_remove_during_oom "remove-oom-${h%%-*}" "$h"
	done
	# The pod with Debian's runsc behind the 2026 runsc shim, stock and
	# behind the guard.
	fault_remove_restart remove-restart-stock-deb stock-deb
	fault_remove_restart remove-restart-guard-deb guard-deb
	fault_many_pods many-guard guard-new "${MANY_PODS:-10}"
}
