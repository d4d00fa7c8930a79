//go:build integration

package integration

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"text/tabwriter"
)

// resizeCases: scenario 16's cases, kept for its table.
var resizeCases []*scenarioCase

// TestScenario16Resize: issue 10. A running pod resized in place as
// kubelet does it (the pod slice, then UpdateContainerResources). Behind
// the guard, the sandbox's cgroup never keeps a limit other than the
// pod's: raised to 512Mi, a 400Mi allocation survives, on Debian's runsc
// (which pins the spec's limit on its scope, and cannot run the 2026
// shim's update) and on the 2026 runsc; lowered to 256Mi, the pod is
// killed at its new limit. The stock shim beside it shows what the guard
// changes: on Debian's runsc its scope keeps 256Mi and the allocation is
// killed at the old limit.
func TestScenario16Resize(t *testing.T) {
	cases := loadScenario(t, "16", "resize-stock-deb-sd", "resize-guard-deb", "resize-stock-new", "resize-guard-new")
	resizeCases = cases
	stock := map[string]facts{}
	for _, c := range cases {
		if c.f["runtime"] == "stock" {
			stock[runscFamily(c.f)] = c.f
		}
	}
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		f := c.f
		c.check(t, f["runp_rc"] == "0" && f["start_rc"] == "0", "pod did not start: runp %s (%s), start %s (%s)",
			f["runp_rc"], f["runp_error"], f["start_rc"], f["start_error"])
		expectNoLeftovers(t, c)
		c.check(t, f["raise_slice_rc"] == "0" && f.num("raised_pod_memory_max") == 512<<20,
			"the pod slice was not raised: SetUnitProperties %s, memory.max %s", f["raise_slice_rc"], f["raised_pod_memory_max"])
		// The pod is killed at its lowered limit, stock or guard: the pod
		// slice holds it.
		c.check(t, f["final_state"] == "CONTAINER_EXITED" && !strings.Contains(f["alloc_lowered_output"], "ALLOC-OK"),
			"after the pod went back to 256Mi: container %s, the 400Mi exec said %q", f["final_state"], f["alloc_lowered_output"])
		if f["runtime"] != "guard" {
			// The stock shim writes no limit below the pod (its sandbox
			// spec has none: Debian's runsc boots with the VM's RAM), so
			// its sandbox follows the slice by itself: the bar the guard
			// must meet.
			c.outcome = resizeOutcome(f)
			return
		}
		// Behind the guard: no cgroup below the pod keeps the old limit.
		c.check(t, f["raised_sandbox_memory_max"] == "max" || f.num("raised_sandbox_memory_max") == 512<<20,
			"sandbox cgroup memory.max %q after the raise, want the pod's 536870912 or max", f["raised_sandbox_memory_max"])
		c.check(t, f["raised_sandbox_cpu_max"] == "" || strings.HasPrefix(f["raised_sandbox_cpu_max"], "max ") ||
			f["raised_sandbox_cpu_max"] == "100000 100000",
			"sandbox cgroup cpu.max %q after the raise, want the pod's 100000 100000 or max", f["raised_sandbox_cpu_max"])
		c.check(t, strings.Contains(f["alloc_raised_output"], "ALLOC-OK") && f["alloc_raised_state"] == "CONTAINER_RUNNING",
			"400Mi at 512Mi: exec said %q, container %s, want it to survive", f["alloc_raised_output"], f["alloc_raised_state"])
		c.check(t, strings.Contains(f["guard_follows"], `"to":536870912`), "the guard's record has no follow to 512Mi: %s", f["guard_follows"])
		c.check(t, f.num("follow_log_lines") >= 1, "no 'gvisor sandbox resize followed' line in containerd's log")
		if f["lowered_state"] == "CONTAINER_RUNNING" {
			c.check(t, f["lowered_sandbox_memory_max"] == "max" || f.num("lowered_sandbox_memory_max") == limit,
				"sandbox cgroup memory.max %q after the cut, want the pod's 268435456 or max", f["lowered_sandbox_memory_max"])
		}
		expectAudit(t, c, "audit-raised", "0", "WARN")
		// The update's answer is the runsc shim's, as on the stock shim.
		if s := stock[runscFamily(f)]; s != nil {
			c.check(t, f["update_raise_rc"] == s["update_raise_rc"], "crictl update exited %s behind the guard, %s on the stock shim (%s / %s)",
				f["update_raise_rc"], s["update_raise_rc"], f["update_raise_error"], s["update_raise_error"])
		}
		c.outcome = resizeOutcome(f)
	})
}

// runscFamily: "debian" or "gvisor", the runsc of a case without its flags.
func runscFamily(f facts) string {
	fam, _, _ := strings.Cut(f["runsc"], "-")
	return fam
}

func resizeOutcome(f facts) string {
	return fmt.Sprintf("512Mi: scope %s, 400Mi %s; 256Mi again: 400Mi %s", f["raised_sandbox_memory_max"],
		survived(f["alloc_raised_output"]), survived(f["alloc_lowered_output"]))
}

func survived(out string) string {
	if strings.Contains(out, "ALLOC-OK") {
		return "survived"
	}
	return "killed"
}

// printResize: scenario 16, each case's limits and outcomes.
func printResize(w io.Writer) {
	if len(resizeCases) == 0 {
		return
	}
	fmt.Fprintln(w, "Scenario 16 (in-place resize: pod slice, then crictl update):")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tBEFORE (POD / SANDBOX CGROUP)\tRAISED (POD / SANDBOX CGROUP)\tUPDATE\t400Mi AT 512Mi (POD PEAK)\tLOWERED (POD / SANDBOX)\t400Mi AT 256Mi\tAUDIT AT 512Mi")
	for _, c := range resizeCases {
		f := c.f
		update := "ok"
		if f["update_raise_rc"] != "0" {
			update = "failed: " + clip(f["update_raise_error"], 40)
		}
		verdict := "-"
		if s, err := readAudit(c, "audit-raised"); err == nil {
			verdict = s.Verdict
		}
		fmt.Fprintf(tw, "%s\t%s / %s, cpu %s / %s\t%s / %s, cpu %s / %s\t%s\t%s (%s)\t%s / %s\t%s\t%s\n", c.name,
			f["before_pod_memory_max"], f["before_sandbox_memory_max"], f["before_pod_cpu_max"], orDash(f["before_sandbox_cpu_max"]),
			f["raised_pod_memory_max"], f["raised_sandbox_memory_max"], f["raised_pod_cpu_max"], orDash(f["raised_sandbox_cpu_max"]),
			update, survived(f["alloc_raised_output"]), mibs(f.num("alloc_raised_pod_peak")),
			orDash(f["lowered_pod_memory_max"]), orDash(f["lowered_sandbox_memory_max"]),
			survived(f["alloc_lowered_output"])+" ("+orDash(f["final_reason"])+")", verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
