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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			c.scenario, c.name, orDash(f["runsc"]), runtimeLabel(f), shortCgroup(f),
			totalMemory(f), peaks(f), outcome(f), verdict)
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
	cg := f["sandbox_cgroup"]
	if cg == "" {
		return "-"
	}
	if pod := f["pod_cgroup"]; under(cg, pod) {
		cg = "<pod>" + strings.TrimPrefix(cg, pod)
	}
	return longHex.ReplaceAllStringFunc(cg, func(s string) string { return s[:8] + "…" })
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
	case f["exec_rc"] != "":
		return fmt.Sprintf("exec exit %s, exit %s/%s", orDash(f["exec_exit_code"]), orDash(f["seven_exit_code"]), orDash(f["seven_reason"]))
	case f["reason"] != "":
		return f["reason"] + " exit " + f["exit_code"]
	}
	return "-"
}
