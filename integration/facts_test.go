//go:build integration

// Package integration asserts on what the VM test bed recorded. The guest
// side (guest/*.sh, run by run.sh inside the VM) drives real systemd,
// containerd and runsc and writes one facts file per case; the tests here
// read them, check each scenario's expectations and print the report.
// Run through integration/run.sh, which sets RUNSC_GUARD_RESULTS.
package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	mib   = 1 << 20
	limit = 256 * mib // every workload's memory limit
	// peakMargin: memory.peak may pass memory.max by charges the kernel
	// must not fail (page tables, some kernel allocations) before the OOM
	// kill lands. The pod's peak may exceed its limit by at most this.
	peakMargin = 8 * mib
)

// facts is one case's key=value record (guest/lib.sh `fact`).
type facts map[string]string

func readFacts(path string) (facts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fs := facts{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			fs[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return fs, nil
}

// num returns the fact as an integer, or -1 when absent or not a number.
func (f facts) num(key string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(f[key]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// under reports whether cgroup path p is dir or inside it.
func under(p, dir string) bool {
	return dir != "" && (p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/"))
}

var (
	resultsDir  = os.Getenv("RUNSC_GUARD_RESULTS")
	selected    = strings.Fields(os.Getenv("RUNSC_GUARD_SCENARIOS"))
	guardStatus = os.Getenv("RUNSC_GUARD_GUARD")
	allowNoGrd  = os.Getenv("RUNSC_GUARD_ALLOW_NO_GUARD") == "1"
)

func isSelected(s string) bool {
	for _, x := range selected {
		if x == s {
			return true
		}
	}
	return false
}

// scenarioCase is one recorded pod run, with what the checks found.
type scenarioCase struct {
	scenario, name string
	f              facts
	problems       []string
	// outcome, when set by the scenario's test, replaces the OUTCOME the
	// report derives from the facts (for outcomes only the test can name).
	outcome string
}

// dir is the case's results directory (guest/lib.sh CASE_DIR).
func (c *scenarioCase) dir() string { return filepath.Join(resultsDir, c.scenario, c.name) }

// guardRecord is the part of the guard's decision record
// (runsc-guard.json, cgroupfix.Record) the scenarios assert on. It is
// decoded here from the JSON, not through cgroupfix, so the tests hold the
// guard to the file format operators read.
type guardRecord struct {
	Actions         []string          `json:"actions"`
	Outcome         string            `json:"outcome"`
	PodCgroup       string            `json:"pod_cgroup"`
	TotalMemory     int64             `json:"total_memory"`
	SpecLimitBefore int64             `json:"spec_limit_before"`
	SpecLimitAfter  int64             `json:"spec_limit_after"`
	RunscFlags      map[string]string `json:"runsc_flags"`
	PlacementBefore []recordProc      `json:"placement_before"`
	PlacementAfter  []recordProc      `json:"placement_after"`
	Warnings        []string          `json:"warnings"`
	Error           string            `json:"error"`
}

type recordProc struct {
	PID    int    `json:"pid"`
	Argv0  string `json:"argv0"`
	Cgroup string `json:"cgroup"`
}

// record reads the sandbox's guard record the guest copied out of the
// bundle (guest/lib.sh record_guard); nil when there is none.
func (c *scenarioCase) record(t *testing.T) *guardRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir(), "runsc-guard.json"))
	if err != nil {
		return nil
	}
	var r guardRecord
	if err := json.Unmarshal(b, &r); err != nil {
		c.check(t, false, "runsc-guard.json does not parse: %v", err)
		return nil
	}
	return &r
}

// check records a failed expectation on the case and the test.
func (c *scenarioCase) check(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		msg := fmt.Sprintf(format, args...)
		c.problems = append(c.problems, msg)
		t.Errorf("scenario %s case %s: %s", c.scenario, c.name, msg)
	}
}

// loadScenario returns the recorded cases of scenario s, in the given
// order, or ends the test when the scenario was not selected, was skipped
// for want of a guard, or did not run.
func loadScenario(t *testing.T, s string, names ...string) []*scenarioCase {
	t.Helper()
	if !isSelected(s) {
		t.Skipf("scenario %s not selected (SCENARIOS)", s)
	}
	dir := filepath.Join(resultsDir, s)
	if b, err := os.ReadFile(filepath.Join(dir, "skipped")); err == nil {
		why := strings.TrimSpace(string(b))
		addMissing(s, names, "skipped: "+why)
		if allowNoGrd {
			t.Skipf("scenario %s skipped in the VM: %s (%s)", s, why, guardStatus)
		}
		t.Fatalf("scenario %s skipped in the VM: %s (%s)", s, why, guardStatus)
	}
	status, err := readFacts(filepath.Join(dir, "status"))
	if err != nil {
		addMissing(s, names, "did not run")
		t.Fatalf("scenario %s did not run in the VM (no status; see console.log)", s)
	}
	if status["rc"] != "0" {
		t.Errorf("scenario %s: guest script exited %s after %ss (see %s/log.txt)", s, status["rc"], status["seconds"], dir)
	}
	var cases []*scenarioCase
	for _, n := range names {
		f, err := readFacts(filepath.Join(dir, n+".facts"))
		if err != nil {
			addMissing(s, []string{n}, "not recorded")
			t.Errorf("scenario %s case %s: not recorded (%v)", s, n, err)
			continue
		}
		c := &scenarioCase{scenario: s, name: n, f: f}
		report = append(report, c)
		cases = append(cases, c)
	}
	return cases
}

// run runs fn for each case as a subtest.
func run(t *testing.T, cases []*scenarioCase, fn func(*testing.T, *scenarioCase)) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { fn(t, c) })
	}
}
