//go:build integration

package integration

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
)

// report holds every loaded case, in test order, for printReport.
var report []*scenarioCase

// missing holds cases that never got a facts file, for the table.
var missing []struct{ scenario, name, why string }

func addMissing(s string, names []string, why string) {
	for _, n := range names {
		missing = append(missing, struct{ scenario, name, why string }{s, n, why})
	}
}

// printReport writes the RED/GREEN table: one row per pod run.
func printReport(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "SCENARIO\tCASE\tRUNSC\tRUNTIME\tSANDBOX CGROUP\tTOTAL-MEMORY\tPEAK (POD / SANDBOX)\tOUTCOME\tVERDICT")
	for _, c := range report {
		f := c.f
		verdict := "ok"
		if len(c.problems) > 0 {
			verdict = "FAIL: " + clip(longHex.ReplaceAllStringFunc(c.problems[0], func(s string) string { return s[:8] + "…" }), 160)
			if len(c.problems) > 1 {
				verdict += fmt.Sprintf(" (+%d more)", len(c.problems)-1)
			}
		}
		out := c.outcome
		if out == "" {
			out = outcome(f)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			c.scenario, c.name, orDash(f["runsc"]), runtimeLabel(f), shortCgroup(f),
			totalMemory(f), peaks(f), out, verdict)
	}
	for _, m := range missing {
		fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t%s\tnot run\n", m.scenario, m.name, m.why)
	}
	tw.Flush()
	fmt.Fprintln(w)
	// What the guard said it did, per sandbox (its runsc-guard.json).
	header := false
	for _, c := range report {
		rec := c.f["guard_record"]
		if rec == "" || c.f["runtime"] != "guard" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "Guard audit records (runsc-guard.json in the sandbox bundle):")
			header = true
		}
		if rec != "yes" {
			fmt.Fprintf(w, "  %s/%s: no record\n", c.scenario, c.name)
			continue
		}
		fmt.Fprintf(w, "  %s/%s: outcome %q; actions: %s\n", c.scenario, c.name,
			c.f["guard_outcome"], orDash(c.f["guard_actions"]))
	}
	if header {
		fmt.Fprintln(w)
	}
	printShimMemory(w)
	printCost(w)
	printFaultTables(w)
	printKube(w)
	printResize(w)
	printGaps(w)
	passed, failed, skipped := 0, 0, 0
	for _, m := range missing {
		if allowNoGrd && strings.HasPrefix(m.why, "skipped") {
			skipped++
		} else {
			failed++
		}
	}
	for _, c := range report {
		if len(c.problems) == 0 {
			passed++
		} else {
			failed++
		}
	}
	if skipped > 0 {
		fmt.Fprintf(w, "integration: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
		return
	}
	fmt.Fprintf(w, "integration: %d passed, %d failed\n", passed, failed)
}

// printShimMemory: the resident memory of the shims serving one pod
// (guest/lib.sh record_shim_rss, scenario 6: a pod with two containers).
func printShimMemory(w io.Writer) {
	header := false
	for _, c := range report {
		f := c.f
		if f["rss_runsc_shim_kb"] == "" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "Shim resident memory per pod (ps -o rss; pod with 2 containers):")
			header = true
		}
		line := fmt.Sprintf("  %s/%s (%s): runsc shims %s in %s processes", c.scenario, c.name, runtimeLabel(f),
			kib(f.num("rss_runsc_shim_kb")), f["procs_runsc_shim"])
		if f["rss_guard_kb"] != "" && f["procs_guard"] != "0" {
			line += fmt.Sprintf(", guard %s in %s process(es)", kib(f.num("rss_guard_kb")), f["procs_guard"])
		}
		fmt.Fprintln(w, line)
	}
	if header {
		fmt.Fprintln(w)
	}
}

// printGaps lists runsc gofers of pods behind the guard found outside the
// pod cgroup once their container started (old runsc starts an app
// container's gofer at StartContainer; the guard moves it at Start, and
// expectInPod fails the scenario when it did not), so the report shows
// where.
func printGaps(w io.Writer) {
	var lines []string
	for _, c := range report {
		f := c.f
		if f["runtime"] != "guard" {
			continue
		}
		var out []string
		for _, pc := range strings.Fields(f["runsc_process_cgroups_started"]) {
			name, cg, _ := strings.Cut(pc, "=")
			if name == "runsc-gofer" && !under(cg, f["pod_cgroup"]) {
				out = append(out, shortPath(cg, f["pod_cgroup"]))
			}
		}
		if len(out) > 0 {
			lines = append(lines, fmt.Sprintf("  %s/%s (%s): after StartContainer a runsc-gofer runs outside the pod cgroup, in %s",
				c.scenario, c.name, orDash(f["runsc"]), strings.Join(out, ", ")))
		}
		if a := f["audit_running"]; a != "" {
			lines = append(lines, fmt.Sprintf("  %s/%s: audit while the workload runs: %s", c.scenario, c.name,
				clip(longHex.ReplaceAllStringFunc(a, func(s string) string { return s[:8] + "…" }), 400)))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "GOFERS OUTSIDE THE POD AFTER START (also failed above):")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
}

// shortPath writes cgroup path p with the pod cgroup as <pod> and ids cut.
func shortPath(p, pod string) string {
	if under(p, pod) {
		p = "<pod>" + strings.TrimPrefix(p, pod)
	}
	return longHex.ReplaceAllStringFunc(p, func(s string) string { return s[:8] + "…" })
}

func kib(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/1024)
}

// clip shortens s to at most n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runtimeLabel(f facts) string {
	if f["runtime"] == "" {
		return "-"
	}
	// "1.6.20~ds1" (Debian), "2.4.2+unknown" (built from the module).
	v, _, _ := strings.Cut(f["containerd"], "~")
	v, _, _ = strings.Cut(v, "+")
	if v == "" {
		return f["runtime"]
	}
	return f["runtime"] + " (containerd " + v + ")"
}

// longHex matches container ids and pod uids (with - or _), to shorten them.
var longHex = regexp.MustCompile(`[0-9a-f]{8}(?:[0-9a-f]{24,}|(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})`)

// shortCgroup: the sandbox's cgroup, the pod cgroup written as <pod>, ids cut.
func shortCgroup(f facts) string {
	if f["sandbox_cgroup"] == "" {
		return "-"
	}
	return shortPath(f["sandbox_cgroup"], f["pod_cgroup"])
}

func mibs(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprintf("%dMi", (n+mib/2)/mib)
}

func totalMemory(f facts) string {
	tm := f.num("total_memory")
	if tm < 0 {
		return "-"
	}
	if ram := f.num("vm_ram"); ram > 0 && tm*100 >= ram*99 {
		return mibs(tm) + " (VM RAM)"
	}
	return mibs(tm)
}

func peaks(f facts) string {
	if f["pod_peak"] == "" && f["sandbox_peak"] == "" {
		return "-"
	}
	return mibs(f.num("pod_peak")) + " / " + mibs(f.num("sandbox_peak"))
}

// outcome says what happened to the workload, in the table's terms.
func outcome(f facts) string {
	switch {
	case f["runp_rc"] != "" && f["runp_rc"] != "0":
		return "RunPodSandbox failed"
	case f["reason"] == "OOMKilled" && under(f["sandbox_cgroup"], f["pod_cgroup"]):
		return "GREEN: OOM-killed in pod"
	case f["reason"] == "OOMKilled":
		return "OOM-killed outside the pod"
	case f["survived"] == "yes" && f["pod_memory_max"] == "max":
		return "ran unlimited"
	case f["survived"] == "yes":
		return "RED: passed its limit"
	case f["start_rc"] != "" && f["start_rc"] != "0":
		return "StartContainer failed"
	case f["exec_rc"] != "":
		return fmt.Sprintf("exec exit %s, exit %s/%s", orDash(f["exec_exit_code"]), orDash(f["seven_exit_code"]), orDash(f["seven_reason"]))
	case f["reason"] != "":
		return f["reason"] + " exit " + f["exit_code"]
	}
	return "-"
}
