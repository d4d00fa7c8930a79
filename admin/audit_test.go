package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
)

const limit256 = "268435456"

func TestAudit(t *testing.T) {
	tests := []struct {
		name string
		pod  fakePod
		// setup runs after the pod is added (to break things).
		setup        func(n *fakeNode, id, podCgroup string)
		wantVerdict  string
		wantPodLimit uint64
		wantGuarded  bool
		// wantReasons are regular expressions, one per reason, in order;
		// wantWarnings the same for the warnings.
		wantReasons, wantWarnings []string
	}{
		{
			name: "seed incident: old runsc without systemd-cgroup",
			pod: fakePod{name: "memory-eater-python", uid: "1cf55082-d769-4a51-a424-2312c23eae82", limit: limit256,
				totalMemory: 540886331392, sandboxCgroup: "/system.slice/kubepods-burstable-pod1cf55082_d769_4a51_a424_2312c23eae82.slice:cri-containerd:SANDBOX"},
			wantVerdict: VerdictAtRisk, wantPodLimit: 256 * mib,
			wantReasons: []string{
				`^runsc-sandbox\[\d+\] of \w{13} in /system\.slice/.*, outside the pod cgroup /kubepods\.slice/.*pod1cf55082_d769.*\.slice$`,
				`^runsc-gofer\[\d+\] .* outside the pod cgroup`,
				`^runsc-gofer\[\d+\] .* outside the pod cgroup`,
				`^total-memory 503\.7Gi above the pod limit 256Mi$`,
			},
		},
		{
			name:        "fixed runsc with systemd-cgroup",
			pod:         fakePod{name: "web", uid: "2a", limit: limit256},
			wantVerdict: VerdictOK, wantPodLimit: 256 * mib,
		},
		{
			name: "Debian runsc with systemd-cgroup: app gofer left in containerd's cgroup",
			pod: fakePod{name: "web", uid: "3a", limit: limit256, totalMemory: 540886331392,
				appGoferCgroup: "/system.slice/containerd.service"},
			wantVerdict: VerdictAtRisk, wantPodLimit: 256 * mib,
			wantReasons: []string{
				`^runsc-gofer\[\d+\] of \w{13} in /system\.slice/containerd\.service, outside the pod cgroup`,
				`^total-memory 503\.7Gi above the pod limit 256Mi$`,
			},
		},
		{
			name: "behind the guard",
			pod: fakePod{name: "web", uid: "4a", limit: limit256,
				rec: &cgroupfix.Record{Actions: []string{"spec-limit", "runsc-flag"}, Outcome: "ok"}},
			wantVerdict: VerdictOK, wantPodLimit: 256 * mib, wantGuarded: true,
		},
		{
			name:        "BestEffort pod under node allocatable",
			pod:         fakePod{name: "batch", uid: "5a", qos: "besteffort"},
			wantVerdict: VerdictUnlimited,
		},
		{
			name: "BestEffort pod escaped to system.slice",
			pod: fakePod{name: "batch", uid: "6a", qos: "besteffort",
				sandboxCgroup: "/system.slice/kubepods-besteffort-pod6a.slice:cri-containerd:X"},
			wantVerdict: VerdictAtRisk,
			wantReasons: []string{`runsc-sandbox.*outside`, `runsc-gofer.*outside`, `runsc-gofer.*outside`},
		},
		{
			name: "pod limit file holds garbage",
			pod:  fakePod{name: "web", uid: "7a", limit: "lots"},
			wantReasons: []string{
				`^pod limit unreadable: .*memory\.max`,
			},
			wantVerdict: VerdictAtRisk,
		},
		{
			name: "bundle gone",
			pod:  fakePod{name: "web", uid: "8a", limit: limit256},
			setup: func(n *fakeNode, id, _ string) {
				os.RemoveAll(filepath.Join(n.state, taskDir, "k8s.io", id))
			},
			wantVerdict: VerdictAtRisk,
			wantReasons: []string{`^pod limit unreadable: read sandbox spec: .*no such file`},
		},
		{
			name:        "cgroupfs driver",
			pod:         fakePod{name: "web", uid: "9a", limit: limit256, driver: "cgroupfs"},
			wantVerdict: VerdictOK, wantPodLimit: 256 * mib,
		},
		{
			name:        "no --bundle: namespace from --root",
			pod:         fakePod{name: "web", uid: "10", limit: limit256, noBundleFlag: true},
			wantVerdict: VerdictOK, wantPodLimit: 256 * mib,
		},
		{
			// kubelet sets the pod's limit only when every container
			// declares one: here each does, so a pod cgroup without one
			// is not kubelet's (runsc or systemd made it).
			name:        "pod cgroup without a limit, every container declares one",
			pod:         fakePod{name: "web", uid: "12", sandboxMemory: limit256, appLimit: 256 * mib},
			wantVerdict: VerdictAtRisk,
			wantReasons: []string{`^pod cgroup /kubepods\.slice/.*pod12\.slice has no memory limit though each of its 1 containers declares one \(sandbox-memory 256Mi\)`},
		},
		{
			name:        "pod cgroup without a limit, a container declares none",
			pod:         fakePod{name: "web", uid: "13", sandboxMemory: limit256},
			wantVerdict: VerdictUnlimited,
		},
		{
			// kubelet raised the pod after the guard sized it: the
			// sandbox keeps its boot size (gVisor cannot change it).
			name: "raised after boot, followed",
			pod: fakePod{name: "web", uid: "14", limit: "536870912", totalMemory: 256 * mib,
				rec: &cgroupfix.Record{Actions: []string{"spec-limit"}, Outcome: "ok", Effective: cgroupfix.Limits{MemoryBytes: 256 * mib},
					Current: &cgroupfix.Limits{MemoryBytes: 512 * mib}}},
			wantVerdict: VerdictWarn, wantPodLimit: 512 * mib, wantGuarded: true,
			wantWarnings: []string{`^resized: booted with total-memory 256Mi, the pod's limit is now 512Mi$`},
		},
		{
			// Lowered: the pod's cgroup holds it; MemTotal says more.
			name: "lowered after boot, followed",
			pod: fakePod{name: "web", uid: "15", limit: "134217728", totalMemory: 256 * mib,
				rec: &cgroupfix.Record{Actions: []string{"spec-limit"}, Outcome: "ok", Effective: cgroupfix.Limits{MemoryBytes: 256 * mib},
					Current: &cgroupfix.Limits{MemoryBytes: 128 * mib}}},
			wantVerdict: VerdictWarn, wantPodLimit: 128 * mib, wantGuarded: true,
			wantWarnings: []string{`^resized: booted with total-memory 256Mi for the pod limit 256Mi, the pod's limit is now 128Mi$`},
		},
		{
			// The stock shim on a runsc that cannot update: the
			// sandbox's scope keeps the old limit under a raised pod.
			name:        "raised, scope left at the old limit",
			pod:         fakePod{name: "web", uid: "16", limit: "536870912", totalMemory: 256 * mib, leafLimit: "268435456"},
			wantVerdict: VerdictWarn, wantPodLimit: 256 * mib,
			wantWarnings: []string{`cri-containerd-\w+\.scope holds memory limit 256Mi, the pod's is 512Mi: a resize not followed below the pod$`},
		},
		{
			name:        "guard record written by a run that warned",
			pod:         fakePod{name: "web", uid: "11", limit: limit256, totalMemory: 1 << 30, rec: &cgroupfix.Record{Actions: []string{"move"}, Outcome: "warn"}},
			wantVerdict: VerdictAtRisk, wantPodLimit: 256 * mib, wantGuarded: true,
			wantReasons: []string{`^total-memory 1Gi above the pod limit 256Mi$`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNode(t)
			id, podCgroup := n.add(tt.pod)
			if tt.setup != nil {
				tt.setup(n, id, podCgroup)
			}
			reports, err := RunAudit(n.options())
			if err != nil {
				t.Fatalf("RunAudit() = %v", err)
			}
			if len(reports) != 1 {
				t.Fatalf("RunAudit() found %d sandboxes, want 1: %+v", len(reports), reports)
			}
			r := reports[0]
			if r.ContainerID != id || r.Verdict != tt.wantVerdict || r.PodLimit != tt.wantPodLimit || r.Guarded != tt.wantGuarded {
				t.Errorf("RunAudit() = id %s verdict %s pod limit %d guarded %v, want %s %s %d %v; reasons %q",
					r.ContainerID, r.Verdict, r.PodLimit, r.Guarded, id, tt.wantVerdict, tt.wantPodLimit, tt.wantGuarded, r.Reasons)
			}
			if len(r.Reasons) != len(tt.wantReasons) {
				t.Fatalf("RunAudit() reasons = %q, want %d matching %q", r.Reasons, len(tt.wantReasons), tt.wantReasons)
			}
			for i, re := range tt.wantReasons {
				if !regexp.MustCompile(re).MatchString(r.Reasons[i]) {
					t.Errorf("reason %d = %q, want a match for %q", i, r.Reasons[i], re)
				}
			}
			if len(r.Warnings) != len(tt.wantWarnings) {
				t.Fatalf("RunAudit() warnings = %q, want %d matching %q", r.Warnings, len(tt.wantWarnings), tt.wantWarnings)
			}
			for i, re := range tt.wantWarnings {
				if !regexp.MustCompile(re).MatchString(r.Warnings[i]) {
					t.Errorf("warning %d = %q, want a match for %q", i, r.Warnings[i], re)
				}
			}
			if r.PodName != "" && (r.PodName != tt.pod.name || r.PodUID != tt.pod.uid || r.PodNamespace != "default") {
				t.Errorf("RunAudit() pod = %s/%s %s, want default/%s %s", r.PodNamespace, r.PodName, r.PodUID, tt.pod.name, tt.pod.uid)
			}
			if len(r.Placement) != 3 {
				t.Errorf("RunAudit() placement = %+v, want the sandbox and two gofers", r.Placement)
			}
		})
	}
}

// TestAuditCommand runs the command on a node with one pod of each verdict
// and checks each output format and the exit status.
func TestAuditCommand(t *testing.T) {
	n := newFakeNode(t)
	risky, _ := n.add(fakePod{name: "memory-eater-bash", uid: "aa", limit: limit256, totalMemory: n.nodeRAM, sandboxCgroup: "/system.slice/x"})
	ok, _ := n.add(fakePod{name: "web", uid: "bb", limit: limit256})
	unlimited, _ := n.add(fakePod{name: "batch", uid: "cc", qos: "besteffort"})
	base := []string{"--proc-root", n.proc, "--cgroup-root", n.cgroup, "--state-dir", n.state, "--guard-config", filepath.Join(t.TempDir(), "none.toml")}

	run := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := Audit(append(base, args...), &out, &errOut)
		if errOut.Len() > 0 {
			t.Errorf("audit %q wrote to stderr: %s", args, errOut.String())
		}
		return out.String(), code
	}

	t.Run("table", func(t *testing.T) {
		out, code := run()
		if code != exitFinding {
			t.Errorf("audit exit = %d, want %d (one AT-RISK)", code, exitFinding)
		}
		for _, want := range []string{
			"POD ", "default/memory-eater-bash", risky[:13], "AT-RISK", "/system.slice/x",
			"default/batch", "UNLIMITED", ok[:13], "3 sandboxes: 1 OK, 1 UNLIMITED, 0 WARN, 1 AT-RISK",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("audit table lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		out, _ := run("--json")
		var got AuditJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("audit --json output does not parse: %v\n%s", err, out)
		}
		want := AuditSummary{Sandboxes: 3, OK: 1, Unlimited: 1, AtRisk: 1}
		if diff := cmp.Diff(want, got.Summary); diff != "" {
			t.Errorf("audit --json summary (-want +got):\n%s", diff)
		}
		verdicts := map[string]string{}
		for _, s := range got.Sandboxes {
			verdicts[s.ContainerID] = s.Verdict
		}
		if diff := cmp.Diff(map[string]string{risky: VerdictAtRisk, ok: VerdictOK, unlimited: VerdictUnlimited}, verdicts); diff != "" {
			t.Errorf("audit --json verdicts (-want +got):\n%s", diff)
		}
	})
	t.Run("prometheus", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "runsc_guard.prom")
		out, code := run("--format=prometheus", "-o", file)
		if out != "" || code != exitFinding {
			t.Errorf("audit -o = %q, %d; want no stdout and %d", out, code, exitFinding)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		prom := string(b)
		for _, want := range []string{
			fmt.Sprintf(`runsc_guard_sandbox_at_risk{namespace="default",pod="memory-eater-bash",uid="aa",container_id=%q} 1`, risky),
			fmt.Sprintf(`runsc_guard_sandbox_at_risk{namespace="default",pod="web",uid="bb",container_id=%q} 0`, ok),
			fmt.Sprintf(`runsc_guard_sandbox_pod_limit_bytes{namespace="default",pod="web",uid="bb",container_id=%q} 268435456`, ok),
			fmt.Sprintf(`runsc_guard_sandbox_total_memory_bytes{namespace="default",pod="memory-eater-bash",uid="aa",container_id=%q} 540886331392`, risky),
			`runsc_guard_audit_sandboxes{verdict="AT-RISK"} 1`,
			"# TYPE runsc_guard_sandbox_at_risk gauge",
		} {
			if !strings.Contains(prom, want+"\n") {
				t.Errorf("prometheus output lacks %q:\n%s", want, prom)
			}
		}
		if strings.Contains(prom, fmt.Sprintf(`runsc_guard_sandbox_pod_limit_bytes{namespace="default",pod="batch"`)) {
			t.Errorf("prometheus output has a pod limit for the BestEffort pod:\n%s", prom)
		}
	})
	t.Run("clean node exits 0", func(t *testing.T) {
		os.RemoveAll(n.proc)
		n.process([]string{"/sbin/init"}, "/init.scope")
		out, code := run()
		if code != exitOK || !strings.Contains(out, "0 sandboxes") {
			t.Errorf("audit on a node without sandboxes = %d, %q; want 0 and 0 sandboxes", code, out)
		}
	})
}

func TestAuditUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad format", []string{"--format=xml"}, "want --format"},
		{"missing proc root", []string{"--proc-root=/nonexistent", "--cgroup-root=testdata"}, "cgroup"},
		{"stray argument", []string{"pods"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Audit(tt.args, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("Audit(%q) = %d, %q; want %d and %q", tt.args, code, errOut.String(), exitUsage, tt.want)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{{0, "-"}, {512, "512"}, {268435456, "256Mi"}, {540886331392, "503.7Gi"}, {1536, "1.5Ki"}}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// BenchmarkAudit audits 1,000 gVisor pods (3,000 runsc processes among
// 1,000 others) in a fake /proc, cgroupfs and containerd state tree.
func BenchmarkAudit(b *testing.B) {
	n := newFakeNode(b)
	for i := range 1000 {
		n.add(fakePod{name: fmt.Sprintf("pod-%d", i), uid: fmt.Sprintf("%08d-0000-0000-0000-000000000000", i), limit: limit256})
		n.process([]string{"/usr/bin/python3", "-c", "pass"}, "/system.slice/other.service")
	}
	opts := n.options()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		reports, err := RunAudit(opts)
		if err != nil || len(reports) != 1000 {
			b.Fatalf("RunAudit() = %d reports, %v; want 1000", len(reports), err)
		}
	}
}
