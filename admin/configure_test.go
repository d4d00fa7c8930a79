package admin

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// copyFixture copies testdata/containerd/<name> (a file or a directory)
// into a temporary directory and returns the path of the copy.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", "containerd", name)
	dst := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(filepath.Dir(dst), os.DirFS(filepath.Dir(src))); err != nil {
		t.Fatalf("copy fixtures: %v", err)
	}
	return dst
}

// handlerTypes returns "file:name" -> runtime_type for every handler of a
// loaded configuration, files named relative to dir.
func handlerTypes(t *testing.T, config string) map[string]string {
	t.Helper()
	files, err := LoadContainerdConfig(config)
	if err != nil {
		t.Fatalf("LoadContainerdConfig(%q) = %v", config, err)
	}
	out := map[string]string{}
	for _, h := range allHandlers(files) {
		rel, _ := filepath.Rel(filepath.Dir(config), h.File.Path)
		out[rel+":"+h.Name] = h.RuntimeType
	}
	return out
}

func runConfigure(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = Configure(args, &o, &e)
	return o.String(), e.String(), code
}

// readTree returns every file under dir with its contents.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConfigureInstallUninstall(t *testing.T) {
	tests := []struct {
		name    string
		fixture string // file, or directory holding config.toml
		args    []string
		// after maps "file:handler" to the runtime_type wanted after install.
		after map[string]string
		// changedLines is how many lines install changes.
		changedLines int
	}{
		{
			name: "version 1 as gVisor's docs wrote it", fixture: "v1-gvisor-docs.toml",
			after:        map[string]string{"v1-gvisor-docs.toml:runsc": RuntimeTypeGuard},
			changedLines: 1,
		},
		{
			name: "containerd 1.6 Debian node, comment on the line", fixture: "containerd16-debian.toml",
			after: map[string]string{
				"containerd16-debian.toml:runc":  runtimeTypeRunc,
				"containerd16-debian.toml:runsc": RuntimeTypeGuard,
			},
			changedLines: 1,
		},
		{
			name: "containerd 1.7 dotted key, inline tables", fixture: "containerd17-styles.toml",
			after: map[string]string{
				"containerd17-styles.toml:gvisor":    RuntimeTypeGuard,
				"containerd17-styles.toml:kata":      "io.containerd.kata.v2",
				"containerd17-styles.toml:untrusted": RuntimeTypeGuard,
				"containerd17-styles.toml:runc":      runtimeTypeRunc,
			},
			changedLines: 2,
		},
		{
			name: "only the named handler", fixture: "containerd17-styles.toml", args: []string{"--handler", "untrusted"},
			after: map[string]string{
				"containerd17-styles.toml:gvisor":    RuntimeTypeRunsc,
				"containerd17-styles.toml:kata":      "io.containerd.kata.v2",
				"containerd17-styles.toml:untrusted": RuntimeTypeGuard,
				"containerd17-styles.toml:runc":      runtimeTypeRunc,
			},
			changedLines: 1,
		},
		{
			name: "containerd 2 version 3, literal strings", fixture: "containerd2.toml",
			after: map[string]string{
				"containerd2.toml:runc":  runtimeTypeRunc,
				"containerd2.toml:runsc": RuntimeTypeGuard,
			},
			changedLines: 1,
		},
		{
			name: "minikube gvisor addon fragment", fixture: "minikube.toml",
			after: map[string]string{
				"minikube.toml:runc":  runtimeTypeRunc,
				"minikube.toml:runsc": RuntimeTypeGuard,
			},
			changedLines: 1,
		},
		{
			name: "CRLF line endings", fixture: "crlf.toml",
			after:        map[string]string{"crlf.toml:runsc": RuntimeTypeGuard},
			changedLines: 1,
		},
		{
			name: "handler in an imported file", fixture: "imports",
			after: map[string]string{
				"config.toml:runc":            runtimeTypeRunc,
				"conf.d/10-gvisor.toml:runsc": RuntimeTypeGuard,
			},
			changedLines: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			config := copyFixture(t, tt.fixture)
			root := filepath.Dir(config)
			if fi, err := os.Stat(config); err == nil && fi.IsDir() {
				root, config = config, filepath.Join(config, "config.toml")
			}
			before := readTree(t, root)
			args := append([]string{"--config", config}, tt.args...)

			out, errOut, code := runConfigure(t, args...)
			if code != 0 {
				t.Fatalf("configure %q = %d, want 0; stderr: %s", args, code, errOut)
			}
			if diff := cmp.Diff(tt.after, handlerTypes(t, config)); diff != "" {
				t.Errorf("handlers after configure %q (-want +got):\n%s\noutput:\n%s", args, diff, out)
			}
			installed := readTree(t, root)
			var changed int
			for p, old := range before {
				o, n := strings.Split(old, "\n"), strings.Split(installed[p], "\n")
				if len(o) != len(n) {
					t.Fatalf("configure changed the line count of %s: %d -> %d", p, len(o), len(n))
				}
				for i := range o {
					if o[i] == n[i] {
						continue
					}
					changed++
					if !strings.Contains(o[i], "runtime_type") || !strings.Contains(n[i], markerPrefix) {
						t.Errorf("configure changed line %d of %s:\n%q\n->\n%q\nwant only runtime_type lines, with the marker", i+1, p, o[i], n[i])
					}
				}
			}
			if changed != tt.changedLines {
				t.Errorf("configure %q changed %d lines, want %d", args, changed, tt.changedLines)
			}

			// Twice changes nothing.
			out, _, code = runConfigure(t, args...)
			if code != 0 || !strings.Contains(out, "nothing to change") {
				t.Errorf("second configure %q = %d, %q; want 0 and nothing to change", args, code, out)
			}
			if diff := cmp.Diff(installed, readTree(t, root)); diff != "" {
				t.Errorf("second configure changed files (-first +second):\n%s", diff)
			}

			// Uninstall restores every byte.
			if _, errOut, code := runConfigure(t, append(args, "--uninstall")...); code != 0 {
				t.Fatalf("configure --uninstall = %d, want 0; stderr: %s", code, errOut)
			}
			if diff := cmp.Diff(before, readTree(t, root)); diff != "" {
				t.Errorf("uninstall did not restore the files (-original +restored):\n%s", diff)
			}
		})
	}
}

func TestConfigureDryRun(t *testing.T) {
	config := copyFixture(t, "containerd16-debian.toml")
	before := readTree(t, filepath.Dir(config))
	out, errOut, code := runConfigure(t, "--config", config, "--dry-run")
	if code != 0 {
		t.Fatalf("configure --dry-run = %d, want 0; stderr: %s", code, errOut)
	}
	want := "--- " + config + "\n+++ " + config + "\n" +
		"@@ -9,7 +9,7 @@\n" +
		"       [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n" +
		"         SystemdCgroup = true\n" +
		"     [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n" +
		"-      runtime_type = \"io.containerd.runsc.v1\"   # gVisor\n" +
		"+      runtime_type = \"io.containerd.runsc-guard.v1\"   # gVisor # runsc-guard: was \"io.containerd.runsc.v1\"\n" +
		"       [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc.options]\n" +
		"         TypeUrl = \"io.containerd.runsc.v1.options\"\n" +
		"         ConfigPath = \"/etc/containerd/runsc.toml\"\n"
	if !strings.Contains(out, want) {
		t.Errorf("configure --dry-run printed\n%s\nwant it to contain\n%s", out, want)
	}
	if diff := cmp.Diff(before, readTree(t, filepath.Dir(config))); diff != "" {
		t.Errorf("dry run changed files:\n%s", diff)
	}
}

func TestConfigureBackup(t *testing.T) {
	config := copyFixture(t, "imports")
	main := filepath.Join(config, "config.toml")
	gvisor := filepath.Join(config, "conf.d", "10-gvisor.toml")
	orig, err := os.ReadFile(gvisor)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runConfigure(t, "--config", main, "--backup")
	if code != 0 {
		t.Fatalf("configure --backup = %d; stderr: %s", code, errOut)
	}
	baks, _ := filepath.Glob(gvisor + ".*.runsc-guard.bak")
	if len(baks) != 1 {
		t.Fatalf("backups of %s = %q, want one; output:\n%s", gvisor, baks, out)
	}
	if got, _ := os.ReadFile(baks[0]); !bytes.Equal(got, orig) {
		t.Errorf("backup %s = %q, want the original %q", baks[0], got, orig)
	}
	if others, _ := filepath.Glob(main + ".*.bak"); len(others) != 0 {
		t.Errorf("backups of the unchanged %s = %q, want none", main, others)
	}
	// The backup must not be picked up by imports = ["conf.d/*.toml"].
	files, err := LoadContainerdConfig(main)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Errorf("files loaded after backup = %s, want the 3 originals", filePaths(files))
	}
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name     string
		fixture  string
		handlers []string
		want     string // in stderr
		wantErr  error  // from LoadContainerdConfig or Plan; nil: not checked
	}{
		{name: "not TOML", fixture: "broken.toml", want: "line 3", wantErr: ErrConfigParse},
		{name: "no gVisor handler", fixture: "no-gvisor.toml", want: "no gVisor runtime handler", wantErr: ErrNoHandler},
		{name: "unknown version", fixture: "version9.toml", want: "version 9", wantErr: ErrConfigVersion},
		{name: "named handler missing", fixture: "containerd16-debian.toml", handlers: []string{"kata"}, want: `named "kata"`, wantErr: ErrNoHandler},
		{name: "named handler is runc", fixture: "containerd16-debian.toml", handlers: []string{"runc"}, want: "fronts only"},
		{name: "missing file", fixture: "does-not-exist.toml", want: "no such file"},
		{name: "runtime_path names the runsc shim", fixture: "runtime-path.toml", want: `remove runtime_path and set shim_path = "/opt/gvisor/bin/containerd-shim-runsc-v1"`, wantErr: ErrRuntimePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, tt.fixture)
			if b, err := os.ReadFile(filepath.Join("testdata", "containerd", tt.fixture)); err == nil {
				if err := os.WriteFile(config, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := readTree(t, dir)
			args := []string{"--config", config}
			for _, h := range tt.handlers {
				args = append(args, "--handler", h)
			}
			_, errOut, code := runConfigure(t, args...)
			if code != exitFinding || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "nothing changed") {
				t.Errorf("configure %q = %d, %q; want %d and %q", args, code, errOut, exitFinding, tt.want)
			}
			if diff := cmp.Diff(before, readTree(t, dir)); diff != "" {
				t.Errorf("refused configure changed files:\n%s", diff)
			}
			if tt.wantErr == nil {
				return
			}
			files, err := LoadContainerdConfig(config)
			if err == nil {
				_, err = Plan(files, PlanOptions{Handlers: tt.handlers})
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("load and plan %s = %v, want %v", config, err, tt.wantErr)
			}
		})
	}
}

func TestUninstallWithoutMarker(t *testing.T) {
	// A handler switched by hand: no record of what it was, so it goes
	// back to the runsc shim, the only one the guard fronts.
	dir := t.TempDir()
	config := filepath.Join(dir, "config.toml")
	in := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc-guard.v1\"\n"
	if err := os.WriteFile(config, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runConfigure(t, "--config", config, "--uninstall"); code != 0 {
		t.Fatalf("configure --uninstall = %d; stderr: %s", code, errOut)
	}
	got, _ := os.ReadFile(config)
	want := strings.Replace(in, RuntimeTypeGuard, RuntimeTypeRunsc, 1)
	if string(got) != want {
		t.Errorf("uninstall of %q = %q, want %q", in, got, want)
	}
}

func TestConfigureThroughSymlink(t *testing.T) {
	config := copyFixture(t, "containerd2.toml")
	link := filepath.Join(t.TempDir(), "config.toml")
	if err := os.Symlink(config, link); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runConfigure(t, "--config", link); code != 0 {
		t.Fatalf("configure = %d; stderr: %s", code, errOut)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("configure replaced the symlink %s: %v, %v", link, fi.Mode(), err)
	}
	if got := handlerTypes(t, config)["containerd2.toml:runsc"]; got != RuntimeTypeGuard {
		t.Errorf("runtime_type of runsc in the link target = %q, want %q", got, RuntimeTypeGuard)
	}
}
