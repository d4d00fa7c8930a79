//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// guardBinary is the guard built once for these tests.
var guardBinary string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "runsc-guard-install-test")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if goTool, err := exec.LookPath("go"); err == nil {
			guardBinary = filepath.Join(dir, "containerd-shim-runsc-guard-v1")
			if out, err := exec.Command(goTool, "build", "-o", guardBinary, ".").CombinedOutput(); err != nil {
				os.Stderr.Write(out)
				panic(err)
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

const debianConfig = `version = 2
# Debian 12 node
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
  runtime_type = "io.containerd.runsc.v1"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
    TypeUrl = "io.containerd.runsc.v1.options"
    ConfigPath = "/etc/containerd/runsc.toml"
`

// installRoot is a node under a temporary directory: a containerd
// config, stub programs on PATH, a bin dir and a cgroupfs.
type installRoot struct {
	dir, config, binDir, stubs, log string
	// original is the config as written.
	original string
}

func newInstallRoot(t *testing.T, stubs ...string) *installRoot {
	t.Helper()
	if guardBinary == "" {
		t.Skip("no go tool on PATH to build the guard")
	}
	dir := t.TempDir()
	r := &installRoot{
		dir: dir, config: filepath.Join(dir, "etc", "containerd", "config.toml"),
		binDir: filepath.Join(dir, "usr", "local", "bin"), stubs: filepath.Join(dir, "stubs"), log: filepath.Join(dir, "calls.log"),
	}
	runscOptions := filepath.Join(dir, "etc", "containerd", "runsc.toml")
	write(t, runscOptions, "[runsc_config]\n  systemd-cgroup = \"true\"\n", 0o644)
	r.original = strings.Replace(debianConfig, "/etc/containerd/runsc.toml", runscOptions, 1)
	write(t, r.config, r.original, 0o644)
	write(t, filepath.Join(dir, "cgroup", "cgroup.controllers"), "memory", 0o644)
	scripts := map[string]string{
		"containerd":               `echo "containerd github.com/containerd/containerd v1.7.27 05044ec"`,
		"containerd-shim-runsc-v1": `exit 0`,
		"runsc":                    `echo "runsc version release-20260615.0"`,
		"systemctl":                `echo "systemctl $*" >> "` + r.log + `"`,
	}
	for _, name := range stubs {
		write(t, filepath.Join(r.stubs, name), "#!/bin/sh\n"+scripts[name]+"\n", 0o755)
	}
	return r
}

func write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

var allStubs = []string{"containerd", "containerd-shim-runsc-v1", "runsc", "systemctl"}

// run runs install.sh with the root's paths; PATH holds only the stubs and
// the system's basic tools.
func (r *installRoot) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	args = append([]string{"../../install.sh", "--binary", guardBinary, "--bin-dir", r.binDir, "--config", r.config, "--cgroup-root", filepath.Join(r.dir, "cgroup")}, args...)
	cmd := exec.Command("bash", args...)
	cmd.Env = []string{
		"PATH=" + r.stubs + ":" + r.binDir + ":/usr/bin:/bin",
		"SYSTEMCTL=" + filepath.Join(r.stubs, "systemctl"),
		"RUNSC_GUARD_CONFIG=" + filepath.Join(r.dir, "etc", "containerd", "runsc-guard.toml"),
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run install.sh %q: %v", args, err)
	}
	return out.String(), code
}

// snapshot returns every file under the root except the call log.
func (r *installRoot) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(r.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == r.log {
			return err
		}
		b, _ := os.ReadFile(p)
		out[p] = string(b)
		return nil
	})
	return out
}

func TestInstallTwiceThenUninstall(t *testing.T) {
	r := newInstallRoot(t, allStubs...)
	out, code := r.run(t)
	if code != 0 {
		t.Fatalf("install.sh = %d, want 0:\n%s", code, out)
	}
	guard := filepath.Join(r.binDir, "containerd-shim-runsc-guard-v1")
	if fi, err := os.Stat(guard); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed guard %s: %v, %v; want mode 0755", guard, fi, err)
	}
	cfg, _ := os.ReadFile(r.config)
	want := strings.Replace(r.original, `runtime_type = "io.containerd.runsc.v1"`,
		`runtime_type = "io.containerd.runsc-guard.v1" # runsc-guard: was "io.containerd.runsc.v1"`, 1)
	if string(cfg) != want {
		t.Errorf("config after install.sh =\n%s\nwant\n%s", cfg, want)
	}
	baks, _ := filepath.Glob(r.config + ".*.runsc-guard.bak")
	if len(baks) != 1 {
		t.Errorf("backups = %q, want one", baks)
	} else if b, _ := os.ReadFile(baks[0]); string(b) != r.original {
		t.Errorf("backup %s = %q, want the original config", baks[0], b)
	}
	if !strings.Contains(out, "restart containerd to apply") {
		t.Errorf("install.sh output lacks the restart hint:\n%s", out)
	}

	before := r.snapshot(t)
	out, code = r.run(t)
	if code != 0 || !strings.Contains(out, "is up to date") || !strings.Contains(out, "nothing to change") || strings.Contains(out, "restart containerd to apply") {
		t.Errorf("second install.sh = %d:\n%s\nwant 0, up to date, nothing to change, no restart hint", code, out)
	}
	if after := r.snapshot(t); len(after) != len(before) || after[r.config] != before[r.config] {
		t.Errorf("second install.sh changed files: %d -> %d files", len(before), len(after))
	}

	out, code = r.run(t, "--uninstall")
	if code != 0 {
		t.Fatalf("install.sh --uninstall = %d:\n%s", code, out)
	}
	if cfg, _ := os.ReadFile(r.config); string(cfg) != r.original {
		t.Errorf("config after --uninstall =\n%s\nwant the original\n%s", cfg, r.original)
	}
	if _, err := os.Stat(guard); err != nil {
		t.Errorf("--uninstall removed the binary without --remove-binary: %v", err)
	}
	if out, code = r.run(t, "--uninstall", "--remove-binary"); code != 0 || !strings.Contains(out, "removed") {
		t.Errorf("install.sh --uninstall --remove-binary = %d:\n%s", code, out)
	}
	if _, err := os.Stat(guard); !os.IsNotExist(err) {
		t.Errorf("guard still installed after --remove-binary: %v", err)
	}
}

func TestInstallDryRun(t *testing.T) {
	r := newInstallRoot(t, allStubs...)
	before := r.snapshot(t)
	out, code := r.run(t, "--dry-run")
	if code != 0 {
		t.Fatalf("install.sh --dry-run = %d:\n%s", code, out)
	}
	for _, want := range []string{"would install", `-  runtime_type = "io.containerd.runsc.v1"`, `+  runtime_type = "io.containerd.runsc-guard.v1"`, "dry run: nothing written"} {
		if !strings.Contains(out, want) {
			t.Errorf("install.sh --dry-run output lacks %q:\n%s", want, out)
		}
	}
	if after := r.snapshot(t); len(after) != len(before) || after[r.config] != before[r.config] {
		t.Errorf("--dry-run changed files:\nbefore %v\nafter %v", before, after)
	}
}

func TestInstallRestart(t *testing.T) {
	r := newInstallRoot(t, allStubs...)
	out, code := r.run(t, "--restart")
	if code != 0 {
		t.Fatalf("install.sh --restart = %d:\n%s", code, out)
	}
	calls, _ := os.ReadFile(r.log)
	if !strings.HasPrefix(string(calls), "systemctl restart containerd\nsystemctl is-active --quiet containerd\n") {
		t.Errorf("systemctl calls = %q, want a restart then is-active", calls)
	}
	// The doctor ran after the restart and found the handler behind the guard.
	if !strings.Contains(out, "goes through runsc-guard") {
		t.Errorf("install.sh --restart did not run the doctor:\n%s", out)
	}
}

func TestInstallRefuses(t *testing.T) {
	tests := []struct {
		name   string
		stubs  []string
		config string // replaces the config when set
		args   []string
		want   string
		code   int
	}{
		{name: "no containerd", stubs: []string{"containerd-shim-runsc-v1", "runsc"}, want: "containerd not found", code: 1},
		{name: "no runsc shim", stubs: []string{"containerd", "runsc"}, want: "containerd-shim-runsc-v1 not found", code: 1},
		{name: "no runsc", stubs: []string{"containerd", "containerd-shim-runsc-v1"}, want: "runsc not found", code: 1},
		{name: "config does not parse", stubs: allStubs, config: "version = 2\n[plugins\n", want: "containerd config does not parse", code: 1},
		{name: "no gVisor handler", stubs: allStubs, config: "version = 2\n", want: "no gVisor runtime handler", code: 1},
		{name: "unknown option", stubs: allStubs, args: []string{"--frobnicate"}, want: "unknown option", code: 2},
		{name: "missing binary", stubs: allStubs, args: []string{"--binary", "/nonexistent/guard"}, want: "run 'make build'", code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newInstallRoot(t, tt.stubs...)
			if tt.config != "" {
				write(t, r.config, tt.config, 0o644)
			}
			before := r.snapshot(t)
			out, code := r.run(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("install.sh %q = %d:\n%s\nwant %d and %q", tt.args, code, out, tt.code, tt.want)
			}
			if code == 1 && !strings.Contains(out, "nothing changed") {
				t.Errorf("install.sh refusal does not say nothing changed:\n%s", out)
			}
			if after := r.snapshot(t); len(after) != len(before) || after[r.config] != before[r.config] {
				t.Errorf("refused install.sh changed files")
			}
		})
	}
}
