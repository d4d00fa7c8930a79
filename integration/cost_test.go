//go:build integration

package integration

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// costCases are scenario 14's pods in run order (guest/scenarios/14-cost.sh).
var costCases = []string{"stock-1", "guard-2", "guard-3", "stock-4", "stock-5", "guard-6", "guard-7", "stock-8"}

// TestScenario14Cost: every pod of the paired start-up and memory run came
// up on its side with its memory measured. The figures are a measurement,
// printed with every sample (printCost), not a pass mark.
func TestScenario14Cost(t *testing.T) {
	run(t, loadScenario(t, "14", costCases...), func(t *testing.T, c *scenarioCase) {
		f := c.f
		c.outcome = "measured"
		c.check(t, f["runp_rc"] == "0", "RunPodSandbox failed: %s", f["runp_error"])
		c.check(t, f["create_rc"] == "0" && f["start_rc"] == "0", "the container did not start: %s%s", f["create_error"], f["start_error"])
		c.check(t, f.num("runp_ms") > 0 && f.num("create_start_ms") > 0, "no start-up timings")
		c.check(t, f.num("pss_runsc_shims_kb") > 0, "no runsc shim memory measured")
		guard := strings.HasPrefix(c.name, "guard")
		c.check(t, (f.num("procs_guard") > 0) == guard, "%s guard processes on the %s side", f["procs_guard"], strings.Split(c.name, "-")[0])
	})
}

func median(v []int64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return float64(s[len(s)/2])
	}
	return float64(s[len(s)/2-1]+s[len(s)/2]) / 2
}

// printCost: scenario 14's samples and medians, stock vs guard.
func printCost(w io.Writer) {
	side := map[string]map[string][]int64{"stock": {}, "guard": {}}
	keys := []string{"runp_ms", "create_start_ms", "pss_guard_kb", "rss_guard_kb", "pss_runsc_shims_kb", "pss_runsc_cli_kb"}
	found := false
	for _, c := range report {
		if c.scenario != "14" {
			continue
		}
		found = true
		s := strings.Split(c.name, "-")[0]
		for _, k := range keys {
			side[s][k] = append(side[s][k], c.f.num(k))
		}
	}
	if !found {
		return
	}
	fmt.Fprintln(w, "Start-up and memory per pod, scenario 14 (containerd 1.6, 2026 runsc, one app container; every sample):")
	for _, k := range keys {
		fmt.Fprintf(w, "  %-20s stock %v median %.0f | guard %v median %.0f", k, side["stock"][k], median(side["stock"][k]), side["guard"][k], median(side["guard"][k]))
		if ms, mg := median(side["stock"][k]), median(side["guard"][k]); ms > 0 && strings.HasSuffix(k, "_ms") {
			fmt.Fprintf(w, " | guard/stock %.2fx", mg/ms)
		}
		fmt.Fprintln(w)
	}
	total := func(s string) float64 {
		return median(side[s]["pss_guard_kb"]) + median(side[s]["pss_runsc_shims_kb"]) + median(side[s]["pss_runsc_cli_kb"])
	}
	if st := total("stock"); st > 0 {
		fmt.Fprintf(w, "  runtime PSS per pod (guard + runsc shims + runsc CLI helpers, medians): stock %.0f KiB, guard %.0f KiB (%.2fx)\n", st, total("guard"), total("guard")/st)
	}
	fmt.Fprintln(w)
}
