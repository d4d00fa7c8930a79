#!/bin/bash
# main.sh: the guest side of one test-bed run, started by testbed-autorun
# after boot. Runs each scenario listed in /mnt/share/scenarios in its own
# bash under a time limit, then saves the journal for the host.
set -uo pipefail
. /mnt/share/guest/lib.sh

say "guest up at uptime $(cut -d' ' -f1 /proc/uptime)s: $(uname -r), $(nproc) CPUs, $(($(vm_ram) / MiB)) MiB"
setup_guest
cut -d' ' -f1 /proc/uptime > "$RESULTS/boot-uptime"
per_scenario=$(cat $SHARE/scenario-timeout)
for s in $(cat $SHARE/scenarios); do
	mkdir -p "$RESULTS/$s"
	reset_node
	t0=$SECONDS
	say "scenario $s: start"
	# TERM first: the scenario's EXIT trap (kube_down, remove_all_pods)
	# gets two minutes before KILL.
	timeout -k 120 "$per_scenario" bash $GUEST/scenario.sh "$s" > "$RESULTS/$s/log.txt" 2>&1
	rc=$?
	stop_strays "$s"
	for f in /var/log/kube*.log; do # the cluster's logs, for kube_diag's reader
		[ -e "$f" ] && gzip -c "$f" > "$RESULTS/$s/${f##*/}.gz" && rm -f "$f"
	done
	printf 'rc=%s\nseconds=%s\n' $rc $((SECONDS - t0)) > "$RESULTS/$s/status"
	say "scenario $s: done rc=$rc in $((SECONDS - t0))s"
done
journalctl -b --no-pager -o short-monotonic > "$RESULTS/journal.txt" 2>&1
cp /var/log/containerd-*.log "$RESULTS/" 2> /dev/null
say "all scenarios done at uptime $(cut -d' ' -f1 /proc/uptime)s"
