package admin

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/runsc"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDoctorNode is a node for the doctor: files under a temporary
// directory, programs answered from a table.
type fakeDoctorNode struct {
	containerd string // `containerd --version`; "" when not installed
	runsc      string // `runsc --version`; "" when not installed
	shimDeps   string // module the runsc shim was built with; "" no build info
	shimDepsV  string // its version; default v2.1.5
	noShim     bool
	noGuard    bool
	cgroupV1   bool
	driver     string // runc SystemdCgroup: "true" or "false"
	// handler is the runsc handler's runtime_type; runscConfig is the
	// [runsc_config] table body of its options file.
	handler     string
	runscConfig string
	version     int
	// runtimePath is the runsc handler's runtime_path ("": unset).
	runtimePath string
}

func (f fakeDoctorNode) env(t *testing.T) DoctorEnv {
	t.Helper()
	dir := t.TempDir()
	cg := filepath.Join(dir, "cgroup")
	marker := filepath.Join(cg, "cgroup.controllers")
	if f.cgroupV1 {
		marker = filepath.Join(cg, "memory", "memory.limit_in_bytes")
	}
	mustWrite(t, marker, "")
	runscOpts := filepath.Join(dir, "runsc.toml")
	mustWrite(t, runscOpts, "binary_name = \"/usr/bin/runsc\"\n[runsc_config]\n"+f.runscConfig+"\n")
	table := map[int]string{2: `plugins."io.containerd.grpc.v1.cri"`, 3: `plugins."io.containerd.cri.v1.runtime"`}[max(f.version, 2)]
	config := filepath.Join(dir, "config.toml")
	mustWrite(t, config, fmt.Sprintf(`version = %d
[%[2]s.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [%[2]s.containerd.runtimes.runc.options]
    SystemdCgroup = %[3]s
[%[2]s.containerd.runtimes.runsc]
  runtime_type = %[4]q
  runtime_path = %[6]q
  [%[2]s.containerd.runtimes.runsc.options]
    TypeUrl = "io.containerd.runsc.v1.options"
    ConfigPath = %[5]q
`, max(f.version, 2), table, f.driver, f.handler, runscOpts, f.runtimePath))

	bins := map[string]string{"containerd": f.containerd, "/usr/bin/runsc": f.runsc}
	if !f.noShim {
		bins[runscShimBinary] = "shim"
	}
	if !f.noGuard {
		bins[guardShimBinary] = "guard"
	}
	return DoctorEnv{
		Config: config, CgroupRoot: cg, ShimPath: runscShimBinary,
		LookPath: func(name string) (string, error) {
			if bins[name] == "" {
				return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
			}
			if filepath.IsAbs(name) {
				return name, nil
			}
			return "/usr/local/bin/" + name, nil
		},
		Run: func(name string, args ...string) (string, error) {
			if len(args) != 1 || args[0] != "--version" {
				t.Errorf("doctor ran %s %q, want only --version", name, args)
			}
			return bins[filepath.Base(name)] + bins[name], nil
		},
		BuildInfo: func(path string) (*debug.BuildInfo, error) {
			if f.shimDeps == "" {
				return nil, errors.New("not a Go executable")
			}
			v := f.shimDepsV
			if v == "" {
				v = "v2.1.5"
			}
			return &debug.BuildInfo{Deps: []*debug.Module{{Path: f.shimDeps, Version: v}}}, nil
		},
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	containerd16Debian = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n"
	containerd17RC     = "containerd github.com/containerd/containerd v1.7.0-rc.1 6b2e8d2\n"
	containerd24       = "containerd github.com/containerd/containerd/v2 v2.4.2 0d0f4b9\n"
	runscDebian        = "runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n"
	runscSeedProd      = "runsc version release-20231009.0\nspec: 1.1.0\n"
	runscFixed         = "runsc version release-20260615.0\nspec: 1.2.1\n"
	runscGoInstall     = "runsc version VERSION_MISSING\nspec: 1.2.1\n"
	shimV2             = "github.com/containerd/containerd/v2"
)

func TestDoctor(t *testing.T) {
	tests := []struct {
		name string
		node fakeDoctorNode
		// want are "LEVEL check: message substring" lines that must all
		// be found; wantExit the command's exit status.
		want     []string
		wantNot  []string
		wantExit int
	}{
		{
			name: "seed production node: containerd 1.7, runsc 20231009, systemd, no systemd-cgroup",
			node: fakeDoctorNode{containerd: containerd17RC, runsc: runscSeedProd, shimDeps: shimV2, driver: "true", handler: RuntimeTypeRunsc},
			want: []string{
				"OK containerd: containerd 1.7.0",
				"INFO cgroup driver: systemd",
				"ERROR handler runsc: runsc 20231009 with the systemd driver and no systemd-cgroup puts sandboxes under system.slice",
				"WARN handler runsc: runsc 20231009 reads only the leaf memory.max",
			},
			wantNot:  []string{"JSON start reply"},
			wantExit: exitFinding,
		},
		{
			name: "Debian 12 node with the 2026 runsc shim",
			node: fakeDoctorNode{containerd: containerd16Debian, runsc: runscDebian, shimDeps: shimV2, driver: "true", handler: RuntimeTypeRunsc},
			want: []string{
				"OK containerd: containerd 1.6.20",
				"containerd-shim-runsc-v1: start reply JSON",
				"ERROR handler runsc: containerd 1.6.20 cannot parse the runsc shim's JSON start reply",
				"ERROR handler runsc: runsc 20221219 with the systemd driver",
			},
			wantExit: exitFinding,
		},
		{
			name: "runsc shim on containerd 2.4's shim library, containerd 1.7",
			node: fakeDoctorNode{containerd: containerd17RC, runsc: runscFixed, shimDeps: shimV2, shimDepsV: "v2.4.2", driver: "true", handler: RuntimeTypeRunsc, runscConfig: `systemd-cgroup = "true"`},
			want: []string{
				"containerd-shim-runsc-v1: start reply protobuf",
				"ERROR handler runsc: containerd 1.7.0 cannot parse the runsc shim's protobuf start reply",
			},
			wantNot:  []string{"JSON start reply"},
			wantExit: exitFinding,
		},
		{
			name:     "the same shim behind the guard",
			node:     fakeDoctorNode{containerd: containerd17RC, runsc: runscFixed, shimDeps: shimV2, shimDepsV: "v2.4.2", driver: "true", handler: RuntimeTypeGuard, runscConfig: `systemd-cgroup = "true"`},
			want:     []string{"containerd-shim-runsc-v1: start reply protobuf", "OK handler runsc: goes through runsc-guard"},
			wantNot:  []string{"ERROR", "cannot parse"},
			wantExit: exitOK,
		},
		{
			name:    "the same shim, containerd 2.4",
			node:    fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, shimDepsV: "v2.4.2", driver: "true", handler: RuntimeTypeRunsc, version: 3, runscConfig: `systemd-cgroup = "true"`},
			want:    []string{"containerd-shim-runsc-v1: start reply protobuf"},
			wantNot: []string{"cannot parse"},
		},
		{
			name: "the same node behind the guard",
			node: fakeDoctorNode{containerd: containerd16Debian, runsc: runscDebian, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard},
			want: []string{
				"OK handler runsc: goes through runsc-guard",
				"INFO handler runsc: runsc /usr/bin/runsc: release 20221219, systemd-cgroup off",
			},
			wantNot:  []string{"ERROR", "WARN"},
			wantExit: exitOK,
		},
		{
			name: "old runsc with systemd-cgroup: limit holds, sandbox sized by node RAM",
			node: fakeDoctorNode{containerd: containerd17RC, runsc: runscDebian, shimDeps: "github.com/containerd/containerd", driver: "true", handler: RuntimeTypeRunsc, runscConfig: `systemd-cgroup = "true"`},
			want: []string{
				"containerd-shim-runsc-v1: start reply plain address",
				"WARN handler runsc: runsc 20221219 reads only the leaf memory.max",
			},
			wantNot:  []string{"ERROR"},
			wantExit: exitOK,
		},
		{
			name:     "fixed runsc needs no guard",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeRunsc, version: 3},
			want:     []string{"OK handler runsc: runtime_type io.containerd.runsc.v1: this runsc and configuration hold pod limits without the guard", "config version 3"},
			wantNot:  []string{"ERROR", "WARN"},
			wantExit: exitOK,
		},
		{
			name:     "boolean systemd-cgroup",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard, runscConfig: "systemd-cgroup = true"},
			want:     []string{"ERROR handler runsc: [runsc_config] systemd-cgroup = true is not a string"},
			wantExit: exitFinding,
		},
		{
			name:     "runsc without a release stamp",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscGoInstall, shimDeps: shimV2, driver: "true", handler: RuntimeTypeRunsc},
			want:     []string{"WARN handler runsc: runsc /usr/bin/runsc reports no release", "WARN handler runsc: systemd driver without systemd-cgroup on a runsc of unknown release"},
			wantNot:  []string{"ERROR"},
			wantExit: exitOK,
		},
		{
			name:     "containerd 1.6 with a version 3 config",
			node:     fakeDoctorNode{containerd: containerd16Debian, runsc: runscFixed, driver: "false", handler: RuntimeTypeGuard, version: 3},
			want:     []string{"ERROR containerd config: ", "is config version 3, which containerd 1.6.20 refuses", "INFO runsc shim: ", "INFO cgroup driver: cgroupfs"},
			wantExit: exitFinding,
		},
		{
			name:     "guard handler whose runtime_path starts the runsc shim",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard, runtimePath: "/opt/gvisor/containerd-shim-runsc-v1"},
			want:     []string{"ERROR handler runsc: runtime_type io.containerd.runsc-guard.v1, but containerd starts runtime_path /opt/gvisor/containerd-shim-runsc-v1: the guard never runs"},
			wantNot:  []string{"goes through runsc-guard"},
			wantExit: exitFinding,
		},
		{
			name:     "runsc handler with runtime_path, not yet guarded",
			node:     fakeDoctorNode{containerd: containerd16Debian, runsc: runscDebian, shimDeps: "github.com/containerd/containerd", driver: "true", handler: RuntimeTypeRunsc, runtimePath: "/opt/gvisor/containerd-shim-runsc-v1"},
			want:     []string{"WARN handler runsc: runtime_path /opt/gvisor/containerd-shim-runsc-v1 is started whatever runtime_type says: install.sh refuses"},
			wantExit: exitFinding,
		},
		{
			name:     "handler path names the guard itself",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard, runtimePath: "/usr/local/bin/containerd-shim-runsc-guard-v1"},
			want:     []string{"OK handler runsc: goes through runsc-guard"},
			wantNot:  []string{"runtime_path"},
			wantExit: exitOK,
		},
		{
			name:     "guard configured but not installed",
			node:     fakeDoctorNode{containerd: containerd24, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard, noGuard: true},
			want:     []string{"ERROR handler runsc: runtime_type io.containerd.runsc-guard.v1 but containerd-shim-runsc-guard-v1 not found"},
			wantExit: exitFinding,
		},
		{
			name:     "no containerd, no runsc shim, no runsc",
			node:     fakeDoctorNode{driver: "true", handler: RuntimeTypeRunsc, noShim: true},
			want:     []string{"ERROR containerd: containerd not found", "ERROR runsc shim: containerd-shim-runsc-v1 not found", `ERROR handler runsc: runsc binary "/usr/bin/runsc" not found`},
			wantExit: exitFinding,
		},
		{
			name: "cgroup v1, systemd driver, stock shim",
			node: fakeDoctorNode{containerd: containerd17RC, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeRunsc, cgroupV1: true},
			want: []string{"INFO cgroup: cgroup v1",
				"ERROR handler runsc: on cgroup v1 every runsc release takes a systemd cgroupsPath for a directory under its own cgroup (containerd.service)"},
			wantExit: exitFinding,
		},
		{
			name:     "cgroup v1, systemd driver, guarded",
			node:     fakeDoctorNode{containerd: containerd17RC, runsc: runscFixed, shimDeps: shimV2, driver: "true", handler: RuntimeTypeGuard, runtimePath: "/usr/local/bin/containerd-shim-runsc-guard-v1", cgroupV1: true},
			want:     []string{"INFO cgroup: cgroup v1", "OK handler runsc: goes through runsc-guard"},
			wantExit: exitOK,
		},
		{
			name:     "cgroup v1",
			node:     fakeDoctorNode{containerd: containerd17RC, runsc: runscFixed, shimDeps: shimV2, driver: "false", handler: RuntimeTypeRunsc, cgroupV1: true},
			want:     []string{"INFO cgroup: cgroup v1", "WARN handler runsc: on cgroup v1 runsc sizes sandboxes from the leaf cgroup"},
			wantExit: exitOK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings := RunDoctor(tt.node.env(t))
			var lines []string
			exit := exitOK
			for _, f := range findings {
				lines = append(lines, f.Level+" "+f.Check+": "+f.Message)
				if f.Level == LevelError {
					exit = exitFinding
				}
				if (f.Level == LevelError || f.Level == LevelWarn) && f.Fix == "" {
					t.Errorf("finding %q has no fix", f.Message)
				}
			}
			all := strings.Join(lines, "\n")
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("RunDoctor() lacks %q; findings:\n%s", w, all)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(all, w) {
					t.Errorf("RunDoctor() has %q; findings:\n%s", w, all)
				}
			}
			if exit != tt.wantExit {
				t.Errorf("RunDoctor() exit = %d, want %d; findings:\n%s", exit, tt.wantExit, all)
			}
		})
	}
}

func TestParseVersions(t *testing.T) {
	containerd := []struct {
		out  string
		want version
	}{
		{containerd16Debian, version{1, 6, 20}},
		{containerd17RC, version{1, 7, 0}},
		{containerd24, version{2, 4, 2}},
		{"containerd containerd.io 1.6.24 61f9fd88f79f\n", version{1, 6, 24}},
		{"bash: containerd: command not found", version{}},
	}
	for _, tt := range containerd {
		if got := parseContainerdVersion(tt.out); got != tt.want {
			t.Errorf("parseContainerdVersion(%q) = %v, want %v", tt.out, got, tt.want)
		}
	}
	releases := []struct {
		out  string
		want int
	}{
		{runscDebian, 20221219},
		{runscSeedProd, 20231009},
		{"runsc version release-20240401.0\n", 20240401},
		{runscGoInstall, 0},
		{"", 0},
	}
	for _, tt := range releases {
		if got := runsc.Release(tt.out); got != tt.want {
			t.Errorf("runsc.Release(%q) = %d, want %d", tt.out, got, tt.want)
		}
	}
}

func TestDoctorCommandUsesGuardConfig(t *testing.T) {
	// shim_path from the guard's configuration names the runsc shim.
	dir := t.TempDir()
	guard := filepath.Join(dir, "runsc-guard.toml")
	mustWrite(t, guard, "shim_path = \"/opt/gvisor/containerd-shim-runsc-v1\"\n")
	var out, errOut bytes.Buffer
	code := Doctor([]string{"--config", filepath.Join(dir, "missing.toml"), "--cgroup-root", dir, "--guard-config", guard, "--json"}, &out, &errOut)
	if code != exitFinding {
		t.Errorf("Doctor() = %d, want %d for a missing containerd config; stderr %s", code, exitFinding, errOut.String())
	}
	if !strings.Contains(out.String(), `"check": "containerd config"`) {
		t.Errorf("Doctor --json = %s, want a containerd config finding", out.String())
	}
	var got []string
	for _, f := range RunDoctor(DoctorEnv{Config: filepath.Join(dir, "missing.toml"), CgroupRoot: dir, ShimPath: "x",
		LookPath: func(string) (string, error) { return "", errors.New("none") }, Run: runProgram}) {
		got = append(got, f.Check)
	}
	if diff := cmp.Diff([]string{"cgroup", "containerd", "containerd config"}, got); diff != "" {
		t.Errorf("RunDoctor() on a broken node checks (-want +got):\n%s", diff)
	}
}
