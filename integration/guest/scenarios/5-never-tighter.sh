# shellcheck shell=bash
# Scenario 5: the guard never limits tighter than kubelet did.
#  unlimited: one container without a memory limit, so kubelet gives the pod
#    slice no MemoryMax, while the sandbox-memory annotation is still
#    non-zero (it sums only declared limits): the pod must run unlimited.
#  overhead: RuntimeClass overhead 64Mi, so the slice limit (320Mi) is
#    above the annotation (256Mi): the sandbox gets the slice limit.
scenario() {
	requires_guard
	use_containerd 1.6 systemd
	run_workload unlimited guard-deb "$WL_ALLOC" pod_limit=max ctr_limit=0 \
		pod_resources="{\"memory_limit_in_bytes\": $LIMIT}"
	run_workload overhead guard-deb "$WL_ALLOC" pod_limit=$((320 * MiB)) \
		overhead="{\"memory_limit_in_bytes\": $((64 * MiB))}"
}
