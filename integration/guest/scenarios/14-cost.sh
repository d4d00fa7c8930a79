# shellcheck shell=bash
# Scenario 14: what a pod costs behind the guard next to the stock shim, in
# one boot (containerd 1.6, 2026 runsc): 4 pods each, interleaved (S G G S S
# G G S, so neither side always runs first), one app container each. Every
# sample is kept: RunPodSandbox, and CreateContainer+StartContainer, in
# milliseconds; and with only that pod on the node, the proportional and
# resident memory of the runtime's processes: the guard, the runsc shims,
# and runsc's CLI helpers (runsc wait, events; not the sandbox or gofers,
# which are the pod's on either side).
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	local i=0 h
	for h in stock guard guard stock stock guard guard stock; do
		i=$((i + 1))
		cost_case "$h-$i" "$h-new"
	done
}

# ms: milliseconds since the epoch.
ms() { echo $(($(date +%s%N) / 1000000)); }

# mem_of FILTER: "PSS_KB RSS_KB COUNT" summed over the processes whose
# command line matches the extended regular expression FILTER.
mem_of() {
	local p pss=0 rss=0 n=0 a b
	for p in /proc/[0-9]*; do
		tr '\0' ' ' < "$p/cmdline" 2> /dev/null | grep -Eq "$1" || continue
		read -r a b < <(awk '/^Pss:/ {p = $2} /^Rss:/ {r = $2} END {print p + 0, r + 0}' "$p/smaps_rollup" 2> /dev/null)
		pss=$((pss + ${a:-0}))
		rss=$((rss + ${b:-0}))
		n=$((n + 1))
	done
	echo "$pss $rss $n"
}

cost_case() {
	local t0 pss rss n
	begin_case "$1"
	case_facts "$2" systemd
	POD_UID=$(cat /proc/sys/kernel/random/uuid)
	pod_cgroup_systemd "$POD_UID" $((512 * MiB))
	t0=$(ms)
	run_pod "$1" "$2" "{\"memory_limit_in_bytes\": $((512 * MiB))}" || { remove_pod; end_case; return; }
	fact runp_ms $(($(ms) - t0))
	record_guard
	t0=$(ms)
	create_ctr main $LIMIT 'exec sleep 3600' && start_ctr "$CTR_ID"
	fact create_start_ms $(($(ms) - t0))
	sleep 2 # let runsc's helpers (runsc wait) start
	read -r pss rss n < <(mem_of '^[^ ]*containerd-shim-runsc-guard-v1 ')
	fact pss_guard_kb "$pss"
	fact rss_guard_kb "$rss"
	fact procs_guard "$n"
	read -r pss rss n < <(mem_of '^[^ ]*containerd-shim-runsc-v1(\.real)? ')
	fact pss_runsc_shims_kb "$pss"
	fact rss_runsc_shims_kb "$rss"
	fact procs_runsc_shims "$n"
	# runsc's CLI as the shims run it: runsc-new ... wait|events|state ...
	read -r pss rss n < <(mem_of '^[^ ]*runsc-new .* (wait|events|state|ps) ')
	fact pss_runsc_cli_kb "$pss"
	fact rss_runsc_cli_kb "$rss"
	fact procs_runsc_cli "$n"
	remove_pod
	end_case
}
