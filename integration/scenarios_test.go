//go:build integration

package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if resultsDir == "" {
		fmt.Fprintln(os.Stderr, "RUNSC_GUARD_RESULTS is not set: run integration/run.sh")
		os.Exit(2)
	}
	code := m.Run()
	printReport(os.Stdout)
	os.Exit(code)
}

// expectRed: the seed's incident. The sandbox sits outside the pod slice
// (system.slice), boots believing it has the whole VM, and the workload
// goes past its limit without an OOM kill.
func expectRed(t *testing.T, c *scenarioCase) {
	f := c.f
	if !expectSandbox(t, c) {
		return
	}
	c.check(t, under(f["sandbox_cgroup"], "/system.slice"),
		"sandbox cgroup %q, want under /system.slice", f["sandbox_cgroup"])
	expectWholeVM(t, c)
	expectSurvived(t, c)
	c.check(t, f.num("sandbox_peak") > limit,
		"sandbox cgroup peak %d, want > limit %d (the workload must pass 256Mi)", f.num("sandbox_peak"), limit)
}

// expectGreen: the pod held to podLimit. Sandbox and every gofer in the pod
// cgroup, --total-memory = podLimit, the workload OOM-killed, and the pod's
// peak within the limit (plus peakMargin) while carrying the workload.
func expectGreen(t *testing.T, c *scenarioCase, podLimit int64) {
	f := c.f
	if !expectSandbox(t, c) {
		return
	}
	expectInPod(t, c)
	c.check(t, f.num("total_memory") == podLimit,
		"--total-memory=%s, want %d", f["total_memory"], podLimit)
	c.check(t, f["reason"] == "OOMKilled",
		"container reason %q (exit %s), want OOMKilled", f["reason"], f["exit_code"])
	c.check(t, f["survived"] == "no", "the workload survived its limit (last log line %q)", f["log_tail"])
	peak := f.num("pod_peak")
	c.check(t, peak >= 0 && peak <= podLimit+peakMargin,
		"pod cgroup memory.peak %d, want <= %d + %d", peak, podLimit, peakMargin)
	c.check(t, peak >= podLimit/2,
		"pod cgroup memory.peak %d: the workload's memory was not charged to the pod (limit %d)", peak, podLimit)
	expectNoLeftovers(t, c)
}

// expectSandbox: the pod and its container came up, a sandbox was seen,
// and the workload ended in time.
func expectSandbox(t *testing.T, c *scenarioCase) bool {
	if !expectPod(t, c) {
		return false
	}
	c.check(t, c.f["finished"] == "0", "the workload did not finish in time (state %s)", c.f["state"])
	return true
}

// expectPod: the pod and its (first) container came up, a sandbox was seen.
func expectPod(t *testing.T, c *scenarioCase) bool {
	f := c.f
	c.check(t, f["runp_rc"] == "0", "RunPodSandbox failed: %s", f["runp_error"])
	if f["runp_rc"] != "0" {
		return false
	}
	c.check(t, f["sandbox_pid"] != "", "no runsc-sandbox process found for pod %s", f["pod_id"])
	c.check(t, f["create_rc"] == "0", "CreateContainer failed: %s", f["create_error"])
	c.check(t, f["start_rc"] == "0", "StartContainer failed: %s", f["start_error"])
	return f["sandbox_pid"] != ""
}

// expectInPod: the sandbox and its gofers in the pod's cgroup.
func expectInPod(t *testing.T, c *scenarioCase) {
	f := c.f
	c.check(t, under(f["sandbox_cgroup"], f["pod_cgroup"]),
		"sandbox cgroup %q, want under the pod cgroup %q", f["sandbox_cgroup"], f["pod_cgroup"])
	// The sandbox and gofers hold the pod's memory; runsc CLI calls made
	// by the shim (runsc wait, events) rightly stay in the shim's cgroup.
	for _, pc := range strings.Fields(f["runsc_process_cgroups"]) {
		name, cg, _ := strings.Cut(pc, "=")
		if name == "runsc-sandbox" || name == "runsc-gofer" {
			c.check(t, under(cg, f["pod_cgroup"]), "%s in cgroup %q, want under the pod cgroup", name, cg)
		}
	}
}

// expectWholeVM: --total-memory is the VM's RAM (within 1%).
func expectWholeVM(t *testing.T, c *scenarioCase) {
	tm, ram := c.f.num("total_memory"), c.f.num("vm_ram")
	d := tm - ram
	if d < 0 {
		d = -d
	}
	c.check(t, tm > 0 && d*100 <= ram, "--total-memory=%d, want the VM's RAM %d", tm, ram)
}

// expectSurvived: the workload ran to its end, no OOM kill anywhere.
func expectSurvived(t *testing.T, c *scenarioCase) {
	f := c.f
	c.check(t, f["survived"] == "yes", "the workload did not survive: reason %q exit %s, last log line %q",
		f["reason"], f["exit_code"], f["log_tail"])
	c.check(t, f["exit_code"] == "0", "exit code %s, want 0", f["exit_code"])
	c.check(t, f.num("pod_oom_kill") <= 0 && f.num("sandbox_oom_kill") <= 0,
		"OOM kills: pod %s, sandbox cgroup %s; want none", f["pod_oom_kill"], f["sandbox_oom_kill"])
}

func expectNoLeftovers(t *testing.T, c *scenarioCase) {
	c.check(t, c.f["leftover_processes"] == "",
		"processes left after RemovePodSandbox: %s", c.f["leftover_processes"])
}

// expectRecord: the guard's audit record next to the bundle. Its absence is
// reported, not failed, until the guard writes one (RUNSC_GUARD_REQUIRE_RECORD=1
// makes it an error).
func expectRecord(t *testing.T, c *scenarioCase) {
	if c.f["guard_record"] == "yes" {
		return
	}
	if os.Getenv("RUNSC_GUARD_REQUIRE_RECORD") == "1" {
		c.check(t, false, "no runsc-guard.json audit record in the sandbox bundle")
		return
	}
	t.Logf("scenario %s case %s: no runsc-guard.json audit record in the sandbox bundle", c.scenario, c.name)
}

func TestScenario1Red(t *testing.T) {
	run(t, loadScenario(t, "1", "doubler", "alloc"), expectRed)
}

func TestScenario2Green(t *testing.T) {
	run(t, loadScenario(t, "2", "doubler", "alloc"), func(t *testing.T, c *scenarioCase) {
		expectGreen(t, c, limit)
		expectRecord(t, c)
	})
}

func TestScenario3RunscVariants(t *testing.T) {
	run(t, loadScenario(t, "3", "deb-sd", "new-sd", "new"), func(t *testing.T, c *scenarioCase) {
		expectGreen(t, c, limit)
		expectRecord(t, c)
	})
}

func TestScenario4Cgroupfs(t *testing.T) {
	run(t, loadScenario(t, "4", "stock-deb", "alloc", "new"), func(t *testing.T, c *scenarioCase) {
		if c.name == "stock-deb" {
			t.Logf("baseline, not asserted: outcome %q, --total-memory=%s", outcome(c.f), c.f["total_memory"])
			return
		}
		c.check(t, strings.HasPrefix(c.f["pod_cgroup"], "/kubepods/burstable/pod"),
			"pod cgroup %q, want /kubepods/burstable/pod<uid>", c.f["pod_cgroup"])
		expectGreen(t, c, limit)
		expectRecord(t, c)
	})
}

func TestScenario5NeverTighter(t *testing.T) {
	cases := loadScenario(t, "5", "unlimited", "overhead")
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		switch c.name {
		case "unlimited":
			// No pod limit from kubelet, a non-zero annotation: unlimited.
			if !expectSandbox(t, c) {
				return
			}
			c.check(t, c.f["pod_memory_max"] == "max", "pod slice memory.max %q, want max", c.f["pod_memory_max"])
			c.check(t, c.f.num("annotation_sandbox_memory") > 0,
				"sandbox-memory annotation %q, want non-zero (the case needs it)", c.f["annotation_sandbox_memory"])
			expectInPod(t, c)
			expectWholeVM(t, c)
			expectSurvived(t, c)
		case "overhead":
			// The slice limit (320Mi) includes the overhead, the annotation (256Mi) does not.
			expectGreen(t, c, 320*mib)
		}
		expectRecord(t, c)
	})
}

func TestScenario6Transparency(t *testing.T) {
	cases := loadScenario(t, "6", "life-stock", "oom-stock", "life-guard", "oom-guard", "leftovers")
	byName := map[string]*scenarioCase{}
	for _, c := range cases {
		byName[c.name] = c
	}
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		f := c.f
		switch {
		case strings.HasPrefix(c.name, "life-"):
			if !expectPod(t, c) {
				return
			}
			c.check(t, f["exec_exit_code"] == "3" && f["exec_output"] == "exec-ok",
				"exec: exit code %q output %q, want 3 and exec-ok", f["exec_exit_code"], f["exec_output"])
			c.check(t, strings.Contains(f["logs"], "hello-from-main"), "logs %q lack hello-from-main", f["logs"])
			c.check(t, f["stopped_state"] == "CONTAINER_EXITED", "after StopContainer: state %s", f["stopped_state"])
			c.check(t, f["seven_exit_code"] == "7", "exit code %s, want 7", f["seven_exit_code"])
			c.check(t, f["rm_rc"] == "0", "RemoveContainer failed")
			expectNoLeftovers(t, c)
		case strings.HasPrefix(c.name, "oom-"):
			c.check(t, f["reason"] == "OOMKilled", "reason %q exit %s, want OOMKilled", f["reason"], f["exit_code"])
			expectNoLeftovers(t, c)
		case c.name == "leftovers":
			c.check(t, f["guard_processes"] == "0" && f["runsc_processes"] == "0" && f["shim_processes"] == "0",
				"processes left after all pods were removed: guard %s, runsc %s, shims %s",
				f["guard_processes"], f["runsc_processes"], f["shim_processes"])
		}
		// Behind the guard, everything CRI reports is as without it.
		if other, ok := byName[strings.Replace(c.name, "-guard", "-stock", 1)]; ok && other != c {
			for _, k := range []string{"exec_rc", "exec_exit_code", "exec_output", "logs", "stopped_state", "stopped_exit_code",
				"stopped_reason", "seven_exit_code", "seven_reason", "seven_logs", "state", "exit_code", "reason"} {
				c.check(t, f[k] == other.f[k], "%s = %q behind the guard, %q without it", k, f[k], other.f[k])
			}
		}
	})
}

func TestScenario7Containerd2(t *testing.T) {
	cases := loadScenario(t, "7", "red-doubler", "red-alloc", "green-doubler", "green-alloc")
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		if strings.HasPrefix(c.name, "red-") {
			expectRed(t, c)
			return
		}
		expectGreen(t, c, limit)
		expectRecord(t, c)
	})
}
