//go:build integration

package integration

import (
	"os"
	"strings"
	"testing"
)

// TestScenario13CgroupV1: the same node on cgroup v1 (its own boot). With
// the systemd driver every runsc release puts the stock sandbox under
// containerd.service (docs/upstream.md#v1): RED, and audit says AT-RISK.
// Behind the guard runsc creates the sandbox's cgroups in the guard's
// scope under the pod slice: GREEN in the memory, cpu and pids
// hierarchies, with no move, and audit says OK.
func TestScenario13CgroupV1(t *testing.T) {
	names := []string{
		"sd-alloc-stock-deb", "sd-alloc-guard-deb", "sd-alloc-stock-new", "sd-alloc-guard-new",
		"sd-alloc-guard-new-sd",
		"fs-alloc-stock-deb", "fs-alloc-guard-deb", "fs-alloc-stock-new", "fs-alloc-guard-new",
	}
	// The bash doubler runs when asked for (RUNSC_GUARD_V1_WORKLOADS,
	// left out of CI for its time: the allocator shows the same placement
	// and limit, in a third of it).
	if strings.Contains(os.Getenv("RUNSC_GUARD_V1_WORKLOADS"), "doubler") {
		names = append(names, "sd-doubler-stock-deb", "sd-doubler-guard-deb", "sd-doubler-stock-new", "sd-doubler-guard-new",
			"fs-doubler-stock-deb", "fs-doubler-guard-deb", "fs-doubler-stock-new", "fs-doubler-guard-new")
	}
	run(t, loadScenario(t, "13", names...), func(t *testing.T, c *scenarioCase) {
		f := c.f
		guard := f["runtime"] == "guard"
		if strings.HasPrefix(c.name, "fs-") {
			c.check(t, strings.HasPrefix(f["pod_cgroup"], "/kubepods/burstable/pod"),
				"pod cgroup %q, want /kubepods/burstable/pod<uid>", f["pod_cgroup"])
			// An absolute cgroupfs path is where runsc's v1 manager puts
			// the sandbox, with or without the guard.
			expectGreen(t, c, limit)
			expectV1InPod(t, c)
			if guard {
				expectActions(t, c, "spec-limit")
			}
			expectRunningAudit(t, c, "OK")
			return
		}
		if !guard {
			expectRed(t, c)
			c.check(t, under(f["sandbox_cgroup"], "/system.slice/containerd.service"),
				"sandbox cgroup %q, want under /system.slice/containerd.service (runsc's own cgroup)", f["sandbox_cgroup"])
			expectRunningAudit(t, c, "AT-RISK")
			return
		}
		expectGreen(t, c, limit)
		expectV1InPod(t, c)
		scope := f["pod_cgroup"] + "/runsc-guard-" + f["pod_id"] + ".scope"
		c.check(t, f["sandbox_cgroup"] == scope, "sandbox cgroup %q, want the guard's scope %q", f["sandbox_cgroup"], scope)
		c.check(t, f["spec_cgroups_path"] == scope, "runsc's cgroupsPath %q, want %q", f["spec_cgroups_path"], scope)
		c.check(t, f.num("sandbox_cgroup_memory_max") == limit,
			"the scope's memory.limit_in_bytes %s, want %d (runsc sizes the sandbox from it)", f["sandbox_cgroup_memory_max"], limit)
		if strings.HasSuffix(c.name, "-sd") {
			// systemd-cgroup on would make the 2026 runsc refuse the
			// absolute path: the guard turns it off.
			expectActions(t, c, "spec-limit", "scope", "runsc-flag")
			if r := c.record(t); r != nil {
				c.check(t, r.RunscFlags["systemd-cgroup"] == "false", "runsc flags %v, want systemd-cgroup false", r.RunscFlags)
			}
		} else {
			expectActions(t, c, "spec-limit", "scope")
		}
		expectRunningAudit(t, c, "OK")
	})
}

// expectV1InPod: on cgroup v1 the sandbox is in the pod cgroup in the cpu
// and pids hierarchies too, not only in memory's.
func expectV1InPod(t *testing.T, c *scenarioCase) {
	for _, k := range []string{"sandbox_cgroup_cpu", "sandbox_cgroup_pids"} {
		c.check(t, under(c.f[k], c.f["pod_cgroup"]), "%s %q, want under the pod cgroup %q", k, c.f[k], c.f["pod_cgroup"])
	}
}

// expectRunningAudit: what audit said of the pod while its workload ran.
func expectRunningAudit(t *testing.T, c *scenarioCase, want string) {
	c.check(t, c.f["audit_verdict"] == want, "audit verdict %q (%s; stderr %q), want %s", c.f["audit_verdict"], c.f["audit_reasons"], c.f["audit_error"], want)
}
