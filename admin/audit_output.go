package admin

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// AuditSummary counts the verdicts.
type AuditSummary struct {
	Sandboxes int `json:"sandboxes"`
	OK        int `json:"ok"`
	Unlimited int `json:"unlimited"`
	Warn      int `json:"warn"`
	AtRisk    int `json:"at_risk"`
}

func summarize(reports []SandboxReport) AuditSummary {
	s := AuditSummary{Sandboxes: len(reports)}
	for _, r := range reports {
		switch r.Verdict {
		case VerdictOK:
			s.OK++
		case VerdictUnlimited:
			s.Unlimited++
		case VerdictWarn:
			s.Warn++
		case VerdictAtRisk:
			s.AtRisk++
		}
	}
	return s
}

// AuditJSON is the document `audit --json` prints.
type AuditJSON struct {
	Summary   AuditSummary    `json:"summary"`
	Sandboxes []SandboxReport `json:"sandboxes"`
}

func writeAuditJSON(w io.Writer, reports []SandboxReport) error {
	return writeJSON(w, AuditJSON{summarize(reports), reports})
}

func writeAuditTable(w io.Writer, reports []SandboxReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tSANDBOX\tPOD-LIMIT\tTOTAL-MEMORY\tCPUS\tSANDBOX-CGROUP\tGUARD\tVERDICT\tREASON")
	for _, r := range reports {
		pod := r.PodNamespace + "/" + r.PodName
		if r.PodName == "" {
			pod = "-"
		}
		limit := "none"
		if r.PodLimit > 0 {
			limit = formatBytes(r.PodLimit)
		}
		cg := "-"
		if len(r.Placement) > 0 {
			cg = r.Placement[0].Cgroup
		}
		guard := "no"
		if r.Guarded {
			guard = r.GuardOutcome
			if len(r.GuardActions) > 0 {
				guard += ":" + strings.Join(r.GuardActions, ",")
			}
		}
		reason := strings.Join(append(slices.Clip(r.Reasons), r.Warnings...), "; ")
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", pod, shortID(r.ContainerID), limit,
			formatBytes(r.TotalMemory), r.CPUNum, cg, guard, r.Verdict, reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := summarize(reports)
	_, err := fmt.Fprintf(w, "%d sandboxes: %d %s, %d %s, %d %s, %d %s\n", s.Sandboxes, s.OK, VerdictOK, s.Unlimited, VerdictUnlimited,
		s.Warn, VerdictWarn, s.AtRisk, VerdictAtRisk)
	return err
}

// writeAuditPrometheus writes node-exporter textfile metrics
// (the Prometheus text exposition format, version 0.0.4).
func writeAuditPrometheus(w io.Writer, reports []SandboxReport) error {
	type metric struct {
		name, help string
		value      func(r SandboxReport) (float64, bool)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	metrics := []metric{
		{"runsc_guard_sandbox_at_risk", "1 when the pod's memory limit does not hold for this gVisor sandbox.",
			func(r SandboxReport) (float64, bool) { return b2f(r.Verdict == VerdictAtRisk), true }},
		{"runsc_guard_sandbox_unlimited", "1 when the pod has no memory limit of its own.",
			func(r SandboxReport) (float64, bool) { return b2f(r.Verdict == VerdictUnlimited), true }},
		{"runsc_guard_sandbox_warn", "1 when the pod's limit holds but the sandbox no longer matches it (resized after boot).",
			func(r SandboxReport) (float64, bool) { return b2f(r.Verdict == VerdictWarn), true }},
		{"runsc_guard_sandbox_guarded", "1 when the sandbox was created behind runsc-guard.",
			func(r SandboxReport) (float64, bool) { return b2f(r.Guarded), true }},
		{"runsc_guard_sandbox_total_memory_bytes", "The --total-memory the sandbox booted with.",
			func(r SandboxReport) (float64, bool) { return float64(r.TotalMemory), r.TotalMemory > 0 }},
		{"runsc_guard_sandbox_pod_limit_bytes", "The pod's memory limit (absent when it has none).",
			func(r SandboxReport) (float64, bool) { return float64(r.PodLimit), r.PodLimit > 0 }},
		{"runsc_guard_sandbox_cpu_num", "The --cpu-num the sandbox booted with.",
			func(r SandboxReport) (float64, bool) { return float64(r.CPUNum), r.CPUNum > 0 }},
		{"runsc_guard_sandbox_processes_outside_pod", "runsc processes of the pod outside its cgroup.",
			func(r SandboxReport) (float64, bool) {
				n := 0
				for _, p := range r.Placement {
					if r.PodCgroup != "" && !p.InPod {
						n++
					}
				}
				return float64(n), true
			}},
	}
	var sb strings.Builder
	for _, m := range metrics {
		fmt.Fprintf(&sb, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, r := range reports {
			if v, ok := m.value(r); ok {
				fmt.Fprintf(&sb, "%s{%s} %s\n", m.name, promLabels(r), strconv.FormatFloat(v, 'f', -1, 64))
			}
		}
	}
	s := summarize(reports)
	fmt.Fprintf(&sb, "# HELP runsc_guard_audit_sandboxes gVisor sandboxes on the node by verdict.\n# TYPE runsc_guard_audit_sandboxes gauge\n")
	for _, v := range []struct {
		verdict string
		n       int
	}{{VerdictOK, s.OK}, {VerdictUnlimited, s.Unlimited}, {VerdictWarn, s.Warn}, {VerdictAtRisk, s.AtRisk}} {
		fmt.Fprintf(&sb, "runsc_guard_audit_sandboxes{verdict=%q} %d\n", v.verdict, v.n)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func promLabels(r SandboxReport) string {
	pairs := [][2]string{
		{"namespace", r.PodNamespace}, {"pod", r.PodName}, {"uid", r.PodUID}, {"container_id", r.ContainerID},
	}
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p[0] + `="` + promEscape(p[1]) + `"`
	}
	return strings.Join(parts, ",")
}

// promEscape escapes a label value: backslash, double quote and newline.
var promEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace

// shortID shortens a container id as crictl does.
func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// formatBytes renders a byte count in binary units: 256Mi, 503.7Gi.
func formatBytes(n uint64) string {
	if n == 0 {
		return "-"
	}
	units := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d%s", int64(v), units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}
