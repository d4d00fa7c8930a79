//go:build integration

package integration

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"text/tabwriter"
)

// kubeCases: scenario 15's cases, kept for its table.
var kubeCases []*scenarioCase

// TestScenario15Kube: issue 9. A real kubelet, API server, scheduler and
// controller manager run the seed's manifests unchanged. RED on the stock
// shim: each pod passes its 256Mi, its sandbox sits in system.slice and
// kubelet's stats show nearly nothing of it. GREEN after install.sh
// --restart: each container OOM-killed and restarted, the sandbox and its
// gofers in kubelet's pod slice, the stats near the limit, audit OK. Then
// Guaranteed, BestEffort, overhead and two-container pods behind the guard.
func TestScenario15Kube(t *testing.T) {
	cases := loadScenario(t, "15", "cluster", "red", "install", "green", "beyond", "resize")
	kubeCases = cases
	run(t, cases, func(t *testing.T, c *scenarioCase) {
		f := c.f
		switch c.name {
		case "cluster":
			c.check(t, f.num("kube_ready_seconds") > 0, "the node never went Ready")
			c.check(t, strings.HasPrefix(f["kubelet_version"], "v1.35"), "kubelet %q, want v1.35", f["kubelet_version"])
			c.check(t, f["runtimeclass_rc"] == "0", "kubectl apply of the RuntimeClasses exited %s", f["runtimeclass_rc"])
			c.outcome = fmt.Sprintf("node Ready in %ss (%s, %s)", f["kube_ready_seconds"], f["kubelet_version"], f["kube_runtime"])
		case "red":
			c.check(t, f["runtime_type"] == "io.containerd.runsc.v1", "handler runtime_type %q before install", f["runtime_type"])
			// python's allocator must run past the pod's limit. The bash
			// doubler is judged by the incident's placement and boot size
			// only: under TCG it needs minutes to pass 256Mi, and kubelet
			// re-created the stock shim's sandbox up to four times in a row
			// meanwhile (15-kube.sh, kube_red), so in stop 17's CI it did
			// not get there in 420 s. Scenario 1 (the demo) runs it past
			// its limit on the stock shim with crictl.
			c.check(t, f["python_over_limit"] == "0", "python: the sandbox never charged 320 MiB on the stock shim (%s B)", f["python_sandbox_current"])
			c.check(t, f.num("python_sandbox_current") > 256<<20, "python: sandbox charges %s B, want past 256Mi", f["python_sandbox_current"])
			for _, app := range []string{"python", "bash"} {
				c.check(t, strings.HasPrefix(f[app+"_sandbox_cgroup"], "/system.slice/"),
					"%s: sandbox in %q, want system.slice (the incident)", app, f[app+"_sandbox_cgroup"])
				tm, ram := f.num(app+"_total_memory"), f.num("vm_ram")
				c.check(t, tm > 0 && (tm-ram)*100 <= ram && (ram-tm)*100 <= ram,
					"%s: sandbox --total-memory %s, want the VM's RAM %s (the incident)", app, f[app+"_total_memory"], f["vm_ram"])
				// kubelet reads the pod slice: the runaway is invisible.
				// Either the pod's memory is near 0 or kubelet lists none
				// for it (CI saw both for the bash pod, whose sandbox
				// kubelet had re-created); the summary itself must have
				// been read (the node's own working set is in it).
				c.check(t, f.num(app+"_stats_node") > 0, "%s: kubelet's /stats/summary could not be read (node working set %q)", app, f[app+"_stats_node"])
				c.check(t, f[app+"_stats_memory"] == "" || f.num(app+"_stats_memory") < 64<<20,
					"%s: kubelet's stats report %s B for the pod, want near 0 or none (the sandbox is not in the pod slice)", app, f[app+"_stats_memory"])
				c.check(t, f.num(app+"_pod_memory_max") == limit, "%s: pod slice memory.max %s, want %d", app, f[app+"_pod_memory_max"], limit)
				c.check(t, f[app+"_gone"] == "0", "%s: the RED pod was not removed within 120 s", app)
			}
			expectKubeAudit(t, c, "audit-red", f["python_pod"], "AT-RISK")
			c.outcome = fmt.Sprintf("RED: python sandbox %s in %s, stats %s; bash sandbox %s (past 320 MiB: %s), stats %s",
				mibs(f.num("python_sandbox_current")), clip(f["python_sandbox_cgroup"], 40), kubeStats(f, "python"),
				mibs(f.num("bash_sandbox_current")), map[string]string{"0": "yes", "1": "no"}[f["bash_over_limit"]], kubeStats(f, "bash"))
		case "install":
			c.check(t, f["doctor_rc"] == "1", "doctor on the RED node exited %s, want 1 (ERROR findings)", f["doctor_rc"])
			c.check(t, f["install_dry_run_rc"] == "0" && f["dry_run_changed_config"] == "no" && f["dry_run_installed"] == "no",
				"install.sh --dry-run exited %s, changed the config: %s, installed the guard: %s",
				f["install_dry_run_rc"], f["dry_run_changed_config"], f["dry_run_installed"])
			c.check(t, f["install_rc"] == "0", "install.sh --restart exited %s (samples/install.txt)", f["install_rc"])
			c.check(t, f["handler_after_install"] == "io.containerd.runsc-guard.v1", "handler runsc is %q after install", f["handler_after_install"])
			c.check(t, f["node_ready_after_install"] == "0", "the node was not Ready within 120 s of containerd's restart")
		case "green":
			c.check(t, f["runtime_type"] == "io.containerd.runsc-guard.v1", "handler runtime_type %q after install", f["runtime_type"])
			c.check(t, f["apply_rc"] == "0", "kubectl apply exited %s", f["apply_rc"])
			for _, app := range []string{"python", "bash"} {
				expectKubeHeld(t, c, app, limit)
				expectKubeStats(t, c, app)
				c.check(t, f[app+"_restarted"] == "0", "%s: kubelet did not report the container OOM-killed and restarted in time (420 s python, 600 s bash)", app)
				expectKubeAudit(t, c, "audit-green-"+app, f[app+"_pod"], "OK")
				c.check(t, f[app+"_guard_actions"] == "spec-limit,runsc-flag" || f[app+"_guard_actions"] == "runsc-flag,spec-limit",
					"%s: guard record actions %q, want spec-limit and runsc-flag (Debian's runsc)", app, f[app+"_guard_actions"])
			}
			c.outcome = fmt.Sprintf("GREEN: python %s; bash %s", f["python_oom_seen"], f["bash_oom_seen"])
		case "resize":
			// Issue 10: kubectl's in-place resize behind the guard.
			c.check(t, f["apply_rc"] == "0" && f["patch_rc"] == "0", "kubectl apply exited %s, kubectl patch --subresource resize %s (patch.txt)", f["apply_rc"], f["patch_rc"])
			c.check(t, f["before_pod_memory_max"] == "268435456" && f["before_sandbox_memory_max"] != "",
				"before the resize: pod slice %q, sandbox cgroup %q, want 268435456 and a running sandbox", f["before_pod_memory_max"], f["before_sandbox_memory_max"])
			c.check(t, f["pod_raised"] == "0", "kubelet did not raise the pod slice to 512Mi within 120 s (now %s)", f["raised_pod_memory_max"])
			c.check(t, f["sandbox_followed"] == "0", "the sandbox's cgroup holds %q 60 s after, want the pod's 536870912 or max", f["raised_sandbox_memory_max"])
			c.check(t, strings.Contains(f["alloc_output"], "ALLOC-OK"), "400 MB in the raised pod: %q, want it to survive", f["alloc_output"])
			c.check(t, f["after_restarts"] == "eater:0", "restarts %q after the allocation, want none", f["after_restarts"])
			c.check(t, strings.Contains(f["follows"], `"to":536870912`), "the guard's record has no follow to 512Mi: %q", f["follows"])
			expectKubeAudit(t, c, "audit-resize", "eater-resize", "WARN")
			// Pod-level resources: the pod's 256Mi sizes and holds it.
			c.check(t, f["podlevel_ready"] == "0" && f.num("podlevel_pod_memory_max") == limit && f.num("podlevel_annotation") == limit &&
				f.num("podlevel_guard_effective") == limit && f.num("podlevel_total_memory") == limit,
				"pod-level resources: ready %s, pod slice %s, sandbox-memory annotation %s, guard effective %s, --total-memory %s, want 256Mi each",
				f["podlevel_ready"], f["podlevel_pod_memory_max"], f["podlevel_annotation"], f["podlevel_guard_effective"], f["podlevel_total_memory"])
			c.check(t, !strings.Contains(f["podlevel_alloc_output"], "ALLOC-OK") && f["podlevel_oom_restarted"] == "0",
				"pod-level resources: 400 MB said %q, OOMKilled and restarted: %s, want killed", f["podlevel_alloc_output"], f["podlevel_oom_restarted"])
			c.outcome = fmt.Sprintf("resized: pod %s, sandbox %s -> %s; 400 MB %s", f["raised_pod_memory_max"],
				f["before_sandbox_memory_max"], f["raised_sandbox_memory_max"], map[bool]string{true: "survived", false: "failed"}[strings.Contains(f["alloc_output"], "ALLOC-OK")])
		case "beyond":
			c.check(t, f["apply_rc"] == "0", "kubectl apply exited %s", f["apply_rc"])
			for _, p := range []string{"guaranteed", "overhead", "two"} {
				c.check(t, f[p+"_waited"] == "0", "%s: kubelet did not report its eater OOM-killed and restarted within 420 s", p)
			}
			expectKubeHeld(t, c, "guaranteed", limit)
			c.check(t, f["guaranteed_qos"] == "Guaranteed" && strings.HasPrefix(f["guaranteed_pod_cgroup"], "/kubepods.slice/kubepods-pod"),
				"guaranteed: QoS %s, pod cgroup %q, want Guaranteed directly under kubepods.slice", f["guaranteed_qos"], f["guaranteed_pod_cgroup"])
			// The RuntimeClass's 64Mi overhead is part of the pod's limit.
			expectKubeHeld(t, c, "overhead", limit+64<<20)
			expectKubeHeld(t, c, "two", limit)
			c.check(t, strings.Contains(f["two_restarts"], "eater:") && !strings.Contains(f["two_restarts"], "eater:0"),
				"two: restarts %q, want the eater restarted", f["two_restarts"])
			c.check(t, f["besteffort_held"] == "0", "besteffort: the pod never logged that it holds 300 MB")
			c.check(t, f["besteffort_qos"] == "BestEffort" && f["besteffort_restarts"] == "eater:0" && f["besteffort_phase"] == "Running",
				"besteffort: QoS %s phase %s restarts %q, want BestEffort Running eater:0", f["besteffort_qos"], f["besteffort_phase"], f["besteffort_restarts"])
			c.check(t, under(f["besteffort_sandbox_cgroup"], f["besteffort_pod_cgroup"]),
				"besteffort: sandbox in %q, outside its pod %q", f["besteffort_sandbox_cgroup"], f["besteffort_pod_cgroup"])
			expectKubeAudit(t, c, "audit-beyond", "eater-besteffort", "OK")
			c.outcome = fmt.Sprintf("guaranteed %s; overhead %s (total-memory %s); two %s; besteffort restarts %s",
				f["guaranteed_oom_seen"], f["overhead_oom_seen"], mibs(f.num("overhead_total_memory")), f["two_oom_seen"], f["besteffort_restarts"])
		}
	})
}

// expectKubeHeld: pod APP was OOM-killed inside its pod and restarted; its
// sandbox booted with the pod's limit and runs, with every runsc process,
// in kubelet's pod slice, whose limit is podLimit; kubelet's stats see it.
func expectKubeHeld(t *testing.T, c *scenarioCase, app string, podLimit int64) {
	t.Helper()
	f := c.f
	c.check(t, f[app+"_sandbox_pid"] != "", "%s: no running sandbox of the pod was caught (none with no container mid-start) (%s_caught=%s)", app, app, f[app+"_caught"])
	c.check(t, strings.Contains(f[app+"_oom_seen"], "OOMKilled"), "%s: restarts and last terminations %q, want OOMKilled", app, f[app+"_oom_seen"])
	c.check(t, f.num(app+"_pod_memory_max") == podLimit, "%s: pod slice memory.max %s, want %d", app, f[app+"_pod_memory_max"], podLimit)
	c.check(t, f.num(app+"_pod_oom_kill") > 0, "%s: no OOM kill in the pod slice (memory.events)", app)
	c.check(t, f.num(app+"_total_memory") == podLimit, "%s: sandbox --total-memory %s, want %d", app, f[app+"_total_memory"], podLimit)
	c.check(t, under(f[app+"_sandbox_cgroup"], f[app+"_pod_cgroup"]), "%s: sandbox in %q, outside its pod %q", app, f[app+"_sandbox_cgroup"], f[app+"_pod_cgroup"])
	for _, p := range strings.Fields(f[app+"_runsc_cgroups"]) {
		_, cg, _ := strings.Cut(p, "=")
		c.check(t, under(cg, f[app+"_pod_cgroup"]), "%s: %s outside its pod %q", app, p, f[app+"_pod_cgroup"])
	}
}

// expectKubeStats: kubelet's /stats/summary showed the pod's memory while
// it grew to its OOM kill (asserted for the seed's pods, whose wait starts
// with them; a pod of the beyond case may have crash-looped before its
// wait began, with its sandbox alive too briefly for kubelet's stats).
func expectKubeStats(t *testing.T, c *scenarioCase, app string) {
	t.Helper()
	c.check(t, c.f.num(app+"_stats_peak") > 64<<20, "%s: kubelet's stats never showed more than 64 MiB of the pod while it grew (peak %q B)", app, c.f[app+"_stats_peak"])
}

// expectKubeAudit: the audit sample NAME exited as its verdict says (0 OK,
// 1 AT-RISK) and lists Kubernetes pod POD with that verdict for each of
// its sandboxes (kubelet re-creates one an OOM kill took down).
func expectKubeAudit(t *testing.T, c *scenarioCase, name, pod, verdict string) {
	t.Helper()
	rc := map[string]string{"OK": "0", "WARN": "0", "AT-RISK": "1"}[verdict]
	key := strings.ReplaceAll(name, "-", "_") + "_rc"
	c.check(t, c.f[key] == rc, "%s exited %s, want %s", name, c.f[key], rc)
	a, err := readAuditJSON(c, name)
	if err != nil {
		c.check(t, false, "%v", err)
		return
	}
	n := 0
	for _, s := range a.Sandboxes {
		if s.PodName != pod {
			continue
		}
		n++
		c.check(t, s.Verdict == verdict, "%s: pod %s sandbox %.12s: %s (%s), want %s", name, pod, s.ContainerID, s.Verdict, strings.Join(s.Reasons, "; "), verdict)
	}
	c.check(t, n > 0, "%s lists %d sandboxes, none of pod %s", name, a.Summary.Sandboxes, pod)
}

// printKube: scenario 15 as kubectl and kubelet showed it.
func printKube(w io.Writer) {
	if len(kubeCases) == 0 {
		return
	}
	fmt.Fprintln(w, "Scenario 15 (kubelet + API server, the seed's manifests):")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  PHASE\tPOD\tQOS\tSTATE\tRESTARTS\tLAST TERMINATION\tOOM SEEN (RESTARTS REASONS)\tPOD LIMIT\tSTATS NOW / PEAK\tSANDBOX NOW\tTOTAL-MEMORY\tSANDBOX CGROUP")
	for _, c := range kubeCases {
		for _, app := range []string{"python", "bash", "guaranteed", "overhead", "two", "besteffort"} {
			f := c.f
			if f[app+"_pod"] == "" {
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.name, clip(f[app+"_pod"], 32), orDash(f[app+"_qos"]),
				orDash(f[app+"_states"]), orDash(f[app+"_restarts"]), orDash(f[app+"_reasons"]), orDash(f[app+"_oom_seen"]), mibs(f.num(app+"_pod_memory_max")),
				kubeStats(f, app)+" / "+mibs(f.num(app+"_stats_peak")), mibs(f.num(app+"_sandbox_current")), mibs(f.num(app+"_total_memory")),
				shortPath(f[app+"_sandbox_cgroup"], f[app+"_pod_cgroup"]))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// TestScenario17KubeContainerd2: scenario 15's seed node on containerd
// 2.4.2 (run when named): the python Deployment RED on the stock shim,
// install.sh --restart against config2.toml, then GREEN.
func TestScenario17KubeContainerd2(t *testing.T) {
	run(t, loadScenario(t, "17", "cluster", "red", "install", "green"), func(t *testing.T, c *scenarioCase) {
		f := c.f
		switch c.name {
		case "cluster":
			c.check(t, strings.HasPrefix(f["kube_runtime"], "containerd://2.4"), "node runtime %q, want containerd 2.4", f["kube_runtime"])
			c.outcome = fmt.Sprintf("node Ready in %ss (%s, %s)", f["kube_ready_seconds"], f["kubelet_version"], f["kube_runtime"])
		case "red":
			c.check(t, strings.HasPrefix(f["python_sandbox_cgroup"], "/system.slice/"), "sandbox in %q, want system.slice", f["python_sandbox_cgroup"])
			c.check(t, f.num("python_sandbox_current") > 256<<20, "sandbox charges %s B, want past 256Mi", f["python_sandbox_current"])
			c.outcome = fmt.Sprintf("RED: python sandbox %s in %s", mibs(f.num("python_sandbox_current")), clip(f["python_sandbox_cgroup"], 40))
		case "install":
			c.check(t, f["install_rc"] == "0", "install.sh --restart exited %s (samples/install.txt)", f["install_rc"])
			c.check(t, f["handler_after_install"] == "io.containerd.runsc-guard.v1", "handler runsc is %q after install", f["handler_after_install"])
			c.check(t, f["node_ready_after_install"] == "0", "the node was not Ready within 120 s of containerd's restart")
		case "green":
			expectKubeHeld(t, c, "python", limit)
			c.check(t, f["python_restarted"] == "0", "kubelet did not report the container OOM-killed and restarted within 420 s")
			expectKubeAudit(t, c, "audit-green-python", f["python_pod"], "OK")
			c.outcome = "GREEN: " + f["python_oom_seen"]
		}
	})
}

// kubeStats: the pod's memory in kubelet's /stats/summary, "none" when
// kubelet listed none for it.
func kubeStats(f facts, app string) string {
	if f[app+"_stats_memory"] == "" {
		return "none"
	}
	return mibs(f.num(app + "_stats_memory"))
}
