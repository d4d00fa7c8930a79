package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoad(t *testing.T) {
	def := Default()
	for _, tc := range []struct {
		name, body string // body "" with name "missing": no file
		want       Config
		wantErr    error
	}{
		{"missing", "", def, nil},
		{"empty", "\n", def, nil},
		{"all keys", `shim_path = "/opt/runsc/containerd-shim-runsc-v1"
policy = "warn"
use_sandbox_annotations = true
add_runsc_flags = false
cgroup_root = "/mnt/cg"
proc_root = "/mnt/proc"
probe_cache = ""
follow_interval = "1m"
`, Config{ShimPath: "/opt/runsc/containerd-shim-runsc-v1", Policy: PolicyWarn, UseSandboxAnnotations: true,
			AddRunscFlags: false, CgroupRoot: "/mnt/cg", ProcRoot: "/mnt/proc", ProbeCache: "", Follow: "1m"}, nil},
		{"follow only after updates", "follow_interval = \"0\"\n", Config{ShimPath: def.ShimPath, Policy: def.Policy,
			AddRunscFlags: true, CgroupRoot: def.CgroupRoot, ProcRoot: def.ProcRoot, ProbeCache: def.ProbeCache, Follow: "0"}, nil},
		{"follow too often", "follow_interval = \"10ms\"\n", Config{}, ErrBadConfig},
		{"follow not a duration", "follow_interval = \"10\"\n", Config{}, ErrBadConfig},
		{"partial keeps defaults", "policy = \"enforce\"\n", def, nil},
		{"unknown key", "polcy = \"warn\"\n", Config{}, ErrBadConfig},
		{"bad policy", "policy = \"lenient\"\n", Config{}, ErrBadConfig},
		{"wrong type", "add_runsc_flags = \"yes\"\n", Config{}, ErrBadConfig},
		{"not toml", "policy = \n", Config{}, ErrBadConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "runsc-guard.toml")
			if tc.name != "missing" {
				if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Load(p)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Load(%q) error = %v, want %v", tc.body, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Load(%q) (-want +got):\n%s", tc.body, diff)
			}
			want := map[string]time.Duration{"": DefaultFollowInterval, "0": 0, "1m": time.Minute}[tc.want.Follow]
			if got.FollowInterval() != want {
				t.Errorf("Load(%q).FollowInterval() = %v, want %v", tc.body, got.FollowInterval(), want)
			}
		})
	}
}

func TestResolveShimRefusesItself(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.ShimPath = self
	if _, err := c.ResolveShim(); !errors.Is(err, ErrDelegateIsGuard) {
		t.Errorf("resolveShim(%q) error = %v, want ErrDelegateIsGuard", self, err)
	}
}
