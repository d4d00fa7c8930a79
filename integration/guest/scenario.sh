#!/bin/bash
# scenario.sh N: runs scenario N (scenarios/N-*.sh defines `scenario`).
# Each scenario runs in a fresh bash, so a failure cannot leak state into
# the next one beyond the pods it leaves, which are removed here.
set -uo pipefail
SCENARIO=$1
. /mnt/share/guest/lib.sh
. /mnt/share/guest/scenarios/"$SCENARIO"-*.sh
trap remove_all_pods EXIT
scenario
