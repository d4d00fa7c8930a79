//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/runsc-guard/runsc-guard/admin"
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
	ok := expectCreated(t, c)
	if c.f["runp_rc"] == "0" {
		c.check(t, c.f["start_rc"] == "0", "StartContainer failed: %s", c.f["start_error"])
	}
	return ok
}

// expectCreated: the pod ran and its (first) container was created, a
// sandbox was seen.
func expectCreated(t *testing.T, c *scenarioCase) bool {
	f := c.f
	c.check(t, f["runp_rc"] == "0", "RunPodSandbox failed: %s", f["runp_error"])
	if f["runp_rc"] != "0" {
		return false
	}
	c.check(t, f["sandbox_pid"] != "", "no runsc-sandbox process found for pod %s", f["pod_id"])
	c.check(t, f["create_rc"] == "0", "CreateContainer failed: %s", f["create_error"])
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
	// Old runsc starts an app container's gofer at StartContainer, in the
	// runsc shim's cgroup; behind the guard it must be in the pod by the
	// time StartContainer returns.
	if f["runtime"] != "guard" {
		return
	}
	for _, pc := range strings.Fields(f["runsc_process_cgroups_started"]) {
		name, cg, _ := strings.Cut(pc, "=")
		if name == "runsc-sandbox" || name == "runsc-gofer" {
			c.check(t, under(cg, f["pod_cgroup"]), "after StartContainer %s in cgroup %q, want under the pod cgroup", name, cg)
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

// expectNoLeftovers: nothing of the pod's sandbox outlives
// RemovePodSandbox: no process, and no cgroup named for it (runsc's, the
// runtime's scope, or the scope a guard move made).
func expectNoLeftovers(t *testing.T, c *scenarioCase) {
	c.check(t, c.f["leftover_processes"] == "",
		"processes left after RemovePodSandbox: %s", c.f["leftover_processes"])
	c.check(t, strings.TrimSpace(c.f["leftover_cgroups"]) == "",
		"cgroups left after RemovePodSandbox: %s", c.f["leftover_cgroups"])
}

// requireRecord: every sandbox behind the guard must have its decision
// record. RUNSC_GUARD_REQUIRE_RECORD=0 only logs a missing one (for a
// guard that predates records).
var requireRecord = os.Getenv("RUNSC_GUARD_REQUIRE_RECORD") != "0"

// expectRecord: the guard's decision record next to the sandbox bundle,
// with outcome ok. Returns it (nil when there is none).
func expectRecord(t *testing.T, c *scenarioCase) *guardRecord {
	r := c.record(t)
	if r == nil {
		if requireRecord {
			c.check(t, false, "no runsc-guard.json decision record in the sandbox bundle")
		} else {
			t.Logf("scenario %s case %s: no runsc-guard.json decision record in the sandbox bundle", c.scenario, c.name)
		}
		return nil
	}
	c.check(t, r.Outcome == "ok", "guard record outcome %q (error %q), want ok", r.Outcome, r.Error)
	return r
}

// expectActions: the guard record lists exactly these actions (in any
// order): what the guard had to change for this runsc and configuration.
func expectActions(t *testing.T, c *scenarioCase, want ...string) {
	r := expectRecord(t, c)
	if r == nil {
		return
	}
	got := slices.Sorted(slices.Values(r.Actions))
	w := slices.Sorted(slices.Values(want))
	c.check(t, slices.Equal(got, w), "guard record actions %q, want %q", r.Actions, want)
}

// upstreamBusy is how the cgroupfs case fails for Debian's runsc with the
// 2026 gVisor shim, with the guard or without it. The shim's setPodCgroup
// (pkg/shim/v1/runsc/service.go) annotates the sandbox with
// dev.gvisor.spec.cgroup-parent=/kubepods/burstable/pod<uid>; runsc
// 20221219 records that directory as the sandbox's cgroup (the sandbox
// process itself runs in the leaf below it) and at StartContainer puts the
// app container's gofer into it, which cgroup v2 refuses: the pod cgroup
// has children, so it may hold no processes. An upstream version
// mismatch, not the guard's doing: the stock baseline fails the same way.
const upstreamBusy = "cgroup.procs: device or resource busy"

// sameError compares two CRI errors with ids and pod uids blanked out.
func sameError(a, b string) bool {
	blank := func(s string) string { return longHex.ReplaceAllString(s, "<id>") }
	return blank(a) == blank(b)
}

// expectUpstreamStartFail: the pod came up but StartContainer failed with
// the upstream incompatibility (upstreamBusy).
func expectUpstreamStartFail(t *testing.T, c *scenarioCase) bool {
	if !expectCreated(t, c) {
		return false
	}
	c.check(t, c.f["start_rc"] != "0" && strings.Contains(c.f["start_error"], upstreamBusy),
		"StartContainer: rc %s error %q, want the upstream failure %q (if upstream fixed it, make this case GREEN)",
		c.f["start_rc"], c.f["start_error"], upstreamBusy)
	return true
}

func byName(cases []*scenarioCase) map[string]*scenarioCase {
	m := map[string]*scenarioCase{}
	for _, c := range cases {
		m[c.name] = c
	}
	return m
}

func TestScenario1Red(t *testing.T) {
	run(t, loadScenario(t, "1", "doubler", "alloc"), expectRed)
}

// Debian's runsc without systemd-cgroup needs both: the spec limit (it
// sizes from the leaf only) and the flag (else it lands in system.slice).
var debianActions = []string{"spec-limit", "runsc-flag"}

func TestScenario2Green(t *testing.T) {
	run(t, loadScenario(t, "2", "doubler", "alloc"), func(t *testing.T, c *scenarioCase) {
		expectGreen(t, c, limit)
		expectActions(t, c, debianActions...)
	})
}

func TestScenario3RunscVariants(t *testing.T) {
	// What the guard must change, per runsc and configuration: Debian's
	// runsc with the flag is placed right but sized from the leaf; the
	// 2026 runsc (release-20260905.0, which reads the parent's memory.max)
	// with the flag needs nothing; without it, only the flag (it places
	// slice paths right on its own, but the guard does not rely on that).
	want := map[string][]string{"deb-sd": {"spec-limit"}, "new-sd": {}, "new": {"runsc-flag"}}
	run(t, loadScenario(t, "3", "deb-sd", "new-sd", "new"), func(t *testing.T, c *scenarioCase) {
		expectGreen(t, c, limit)
		expectActions(t, c, want[c.name]...)
	})
}

func TestScenario4Cgroupfs(t *testing.T) {
	cases := loadScenario(t, "4", "stock-deb", "alloc", "new")
	stock := byName(cases)["stock-deb"]
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		c.check(t, strings.HasPrefix(c.f["pod_cgroup"], "/kubepods/burstable/pod"),
			"pod cgroup %q, want /kubepods/burstable/pod<uid>", c.f["pod_cgroup"])
		switch c.name {
		case "stock-deb":
			// The baseline: Debian's runsc with the 2026 shim, no guard.
			expectUpstreamStartFail(t, c)
			c.outcome = "UPSTREAM-START-FAIL (baseline)"
		case "alloc":
			// Debian's runsc behind the guard: the start fails upstream
			// (upstreamBusy) exactly as without the guard, so no GREEN;
			// what the guard owes holds: sandbox and its gofer in the pod
			// cgroup, --total-memory = the pod limit, its record.
			c.outcome = "LIMIT-OK/UPSTREAM-START-FAIL"
			if !expectUpstreamStartFail(t, c) {
				return
			}
			expectInPod(t, c)
			c.check(t, strings.Contains(c.f["runsc_process_cgroups"], "runsc-gofer="),
				"no sandbox gofer seen after CreateContainer (runsc processes: %q)", c.f["runsc_process_cgroups"])
			c.check(t, c.f.num("total_memory") == limit, "--total-memory=%s, want %d", c.f["total_memory"], limit)
			expectRecord(t, c)
			if stock != nil {
				c.check(t, sameError(c.f["start_error"], stock.f["start_error"]),
					"StartContainer error %q behind the guard, %q without it: the guard must make nothing worse",
					c.f["start_error"], stock.f["start_error"])
			}
			expectNoLeftovers(t, c)
		case "new":
			expectGreen(t, c, limit)
			expectRecord(t, c)
		}
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
	named := byName(cases)
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
			c.check(t, f.num("rss_runsc_shim_kb") > 0, "the runsc shims' resident memory was not measured")
			if c.name == "life-guard" {
				c.check(t, f.num("rss_guard_kb") > 0 && f["procs_guard"] == "1",
					"guard processes %q (RSS %s KiB), want one serving the pod", f["procs_guard"], f["rss_guard_kb"])
			}
			expectNoLeftovers(t, c)
		case strings.HasPrefix(c.name, "oom-"):
			c.check(t, f["reason"] == "OOMKilled", "reason %q exit %s, want OOMKilled", f["reason"], f["exit_code"])
			expectNoLeftovers(t, c)
		case c.name == "leftovers":
			c.check(t, f["guard_processes"] == "0" && f["runsc_processes"] == "0" && f["shim_processes"] == "0",
				"processes left after all pods were removed: guard %s, runsc %s, shims %s",
				f["guard_processes"], f["runsc_processes"], f["shim_processes"])
		}
		if f["runtime"] == "guard" {
			expectRecord(t, c)
		}
		// Behind the guard, everything CRI reports is as without it.
		if other, ok := named[strings.Replace(c.name, "-guard", "-stock", 1)]; ok && other != c {
			for _, k := range []string{"exec_rc", "exec_exit_code", "exec_output", "logs", "stopped_state", "stopped_exit_code",
				"stopped_reason", "seven_exit_code", "seven_reason", "seven_logs", "state", "exit_code", "reason"} {
				c.check(t, f[k] == other.f[k], "%s = %q behind the guard, %q without it", k, f[k], other.f[k])
			}
		}
	})
}

func TestScenario7Containerd2(t *testing.T) {
	cases := loadScenario(t, "7", "red-alloc", "green-alloc")
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		if strings.HasPrefix(c.name, "red-") {
			expectRed(t, c)
			return
		}
		expectGreen(t, c, limit)
		expectActions(t, c, debianActions...)
	})
}

// TestScenario8Move: the guard's fallback on real systemd. With
// add_runsc_flags = false, Debian's runsc puts the sandbox under
// system.slice; the guard moves every process of that cgroup over D-Bus
// into runsc-guard-<id>.scope under the pod slice, between Create and
// Start, and still writes the spec limit (which old runsc applies to its
// own cgroup before it sizes the sandbox).
func TestScenario8Move(t *testing.T) {
	run(t, loadScenario(t, "8", "doubler", "alloc"), func(t *testing.T, c *scenarioCase) {
		f := c.f
		expectGreen(t, c, limit)
		scope := f["pod_cgroup"] + "/runsc-guard-" + f["pod_id"] + ".scope"
		c.check(t, f["sandbox_cgroup"] == scope, "sandbox cgroup %q, want the guard's scope %q", f["sandbox_cgroup"], scope)
		for _, pc := range strings.Fields(f["runsc_process_cgroups"]) {
			name, cg, _ := strings.Cut(pc, "=")
			if name == "runsc-sandbox" || name == "runsc-gofer" {
				c.check(t, cg == scope, "%s in %q, want %q", name, cg, scope)
			}
		}
		c.check(t, f.num("sandbox_cgroup_memory_max") == limit,
			"the scope's memory.max %q, want the pod limit %d", f["sandbox_cgroup_memory_max"], limit)
		c.check(t, !strings.Contains(f["sandbox_cmdline"], "systemd-cgroup=true"),
			"runsc got --systemd-cgroup=true although add_runsc_flags = false")
		r := expectRecord(t, c)
		if r == nil {
			return
		}
		c.check(t, slices.Contains(r.Actions, "move") && slices.Contains(r.Actions, "spec-limit") &&
			!slices.Contains(r.Actions, "runsc-flag"),
			"guard record actions %q, want move and spec-limit, no runsc-flag", r.Actions)
		outside := 0
		for _, p := range r.PlacementBefore {
			if !under(p.Cgroup, f["pod_cgroup"]) {
				outside++
			}
		}
		c.check(t, outside > 0, "placement_before %v: nothing outside the pod, so the move was not exercised", r.PlacementBefore)
		c.check(t, len(r.PlacementAfter) > 0, "no placement_after in the guard record")
		for _, p := range r.PlacementAfter {
			c.check(t, under(p.Cgroup, f["pod_cgroup"]), "placement_after: %s[%d] in %q, outside the pod", p.Argv0, p.PID, p.Cgroup)
		}
	})
}

// readAudit reads the case's `audit --json` output NAME.json (guest
// lib.sh audit_case) and returns the entry of the case's sandbox.
func readAudit(c *scenarioCase, name string) (*admin.SandboxReport, error) {
	id := c.f["pod_id"]
	a, err := readAuditJSON(c, name)
	if err != nil {
		return nil, err
	}
	for i := range a.Sandboxes {
		if a.Sandboxes[i].ContainerID == id {
			return &a.Sandboxes[i], nil
		}
	}
	return nil, fmt.Errorf("%s lists %d sandboxes, not the pod's %q", name, a.Summary.Sandboxes, id)
}

// readAuditJSON reads the case's `audit --json` output NAME.json.
func readAuditJSON(c *scenarioCase, name string) (*admin.AuditJSON, error) {
	b, err := os.ReadFile(filepath.Join(c.dir(), name+".json"))
	if err != nil {
		return nil, err
	}
	var a admin.AuditJSON
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s --json does not parse: %w", name, err)
	}
	return &a, nil
}

// expectAudit: the audit sample NAME exited rc and its JSON lists the
// case's sandbox with the verdict.
func expectAudit(t *testing.T, c *scenarioCase, name, rc, verdict string) *admin.SandboxReport {
	key := strings.ReplaceAll(name, "-", "_") + "_rc"
	c.check(t, c.f[key] == rc, "%s exited %s, want %s", name, c.f[key], rc)
	s, err := readAudit(c, name)
	if err != nil {
		c.check(t, false, "%v", err)
		return nil
	}
	c.check(t, s.Verdict == verdict, "%s verdict %s (%s), want %s", name, s.Verdict, strings.Join(s.Reasons, "; "), verdict)
	return s
}

// TestScenario9Install: issue 5's "install on the RED node turns it
// GREEN". The seed's node (containerd 1.6, one handler "runsc" with
// runtime_type io.containerd.runsc.v1, Debian's runsc, no systemd-cgroup,
// no guard binary): the seed pod is RED and audit and doctor say so;
// install.sh --dry-run shows the change and changes nothing;
// install.sh --restart installs the guard and switches the handler; a new
// pod on the same handler is GREEN and audit says OK.
func TestScenario9Install(t *testing.T) {
	run(t, loadScenario(t, "9", "red", "green"), func(t *testing.T, c *scenarioCase) {
		f := c.f
		switch c.name {
		case "red":
			expectRed(t, c)
			c.check(t, f["runtime_type"] == "io.containerd.runsc.v1", "handler runtime_type %q before install", f["runtime_type"])
			if a := expectAudit(t, c, "audit-before", "1", "AT-RISK"); a != nil {
				c.check(t, !a.Guarded, "audit says the RED pod ran behind the guard")
				c.check(t, slices.ContainsFunc(a.Reasons, func(r string) bool { return strings.Contains(r, "/system.slice/") }),
					"audit reasons %q, want the sandbox outside the pod in system.slice", a.Reasons)
			}
			c.check(t, f["doctor_rc"] == "1" && f.num("doctor_errors") > 0,
				"doctor exited %s with %s ERROR findings, want 1 and some", f["doctor_rc"], f["doctor_errors"])
			c.check(t, f["install_dry_run_rc"] == "0" && f["dry_run_diff"] == "yes",
				"install.sh --dry-run exited %s, diff shown: %s", f["install_dry_run_rc"], f["dry_run_diff"])
			c.check(t, f["dry_run_changed_config"] == "no" && f["dry_run_installed"] == "no",
				"install.sh --dry-run changed the node: config changed %s, binary installed %s",
				f["dry_run_changed_config"], f["dry_run_installed"])
			c.check(t, f["install_rc"] == "0", "install.sh --restart exited %s (samples/install.txt)", f["install_rc"])
		case "green":
			c.check(t, f["runtime_type"] == "io.containerd.runsc-guard.v1", "handler runtime_type %q after install", f["runtime_type"])
			expectGreen(t, c, limit)
			expectActions(t, c, debianActions...)
			if a := expectAudit(t, c, "audit-after", "0", "OK"); a != nil {
				c.check(t, a.Guarded && a.GuardOutcome == "ok",
					"audit shows guard record %v outcome %q, want the guard's record with outcome ok", a.Guarded, a.GuardOutcome)
			}
			// Once the workload runs, old runsc has started the app
			// container's gofer; the guard moved it into the pod at
			// Start, so the running pod audits OK too.
			expectAudit(t, c, "audit-running", "0", "OK")
		}
	})
}

// TestScenario10Containerd17: scenarios 1 and 2 on containerd 1.7.35, the
// stock shim used directly (1.7 parses its JSON start reply).
func TestScenario10Containerd17(t *testing.T) {
	cases := loadScenario(t, "10", "red-alloc", "green-alloc")
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		c.check(t, strings.HasPrefix(c.f["containerd"], "v1.7.") || strings.HasPrefix(c.f["containerd"], "1.7."),
			"containerd %q, want 1.7", c.f["containerd"])
		if strings.HasPrefix(c.name, "red-") {
			c.check(t, c.f["runtime_type"] == "io.containerd.runsc.v1",
				"stock handler runtime_type %q, want the gVisor shim's own", c.f["runtime_type"])
			expectRed(t, c)
			return
		}
		expectGreen(t, c, limit)
		expectActions(t, c, debianActions...)
	})
}
