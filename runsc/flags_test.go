package runsc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"
)

func TestSetRunscFlags(t *testing.T) {
	both := map[string]string{SystemdCgroupKey: "true", CPUNumFromQuotaKey: "true"}
	for _, tc := range []struct {
		name, in    string
		flags       map[string]string
		wantChanged []string
		wantCfg     map[string]string
		wantErr     bool
	}{
		{"empty", "", both, []string{CPUNumFromQuotaKey, SystemdCgroupKey}, both, false},
		{"keeps others", "binary_name = \"/usr/bin/runsc\"\n[runsc_config]\nnetwork = \"none\"\n", map[string]string{SystemdCgroupKey: "true"},
			[]string{SystemdCgroupKey}, map[string]string{"network": "none", SystemdCgroupKey: "true"}, false},
		{"already set", "[runsc_config]\nsystemd-cgroup = \"true\"\n", map[string]string{SystemdCgroupKey: "true"},
			nil, map[string]string{SystemdCgroupKey: "true"}, false},
		{"false turned on", "[runsc_config]\nsystemd-cgroup = \"false\"\n", map[string]string{SystemdCgroupKey: "true"},
			[]string{SystemdCgroupKey}, map[string]string{SystemdCgroupKey: "true"}, false},
		{"bare bool rewritten as string", "[runsc_config]\nsystemd-cgroup = true\n", map[string]string{SystemdCgroupKey: "true"},
			[]string{SystemdCgroupKey}, map[string]string{SystemdCgroupKey: "true"}, false},
		{"runsc_config not a table", "runsc_config = 3\n", both, nil, nil, true},
		{"not toml", "[runsc_config\n", both, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, changed, err := SetFlags([]byte(tc.in), tc.flags)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SetFlags(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.wantChanged, changed); diff != "" {
				t.Errorf("SetFlags(%q) changed (-want +got):\n%s", tc.in, diff)
			}
			if len(changed) == 0 && string(out) != tc.in {
				t.Errorf("SetFlags(%q) rewrote an unchanged document: %q", tc.in, out)
			}
			// What the runsc shim decodes: runsc_config as map[string]string.
			var doc struct {
				Config map[string]string `toml:"runsc_config"`
			}
			if err := toml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("output does not decode as the runsc shim does: %v\n%s", err, out)
			}
			if diff := cmp.Diff(tc.wantCfg, doc.Config); diff != "" {
				t.Errorf("runsc_config (-want +got):\n%s", diff)
			}
			if strings.Contains(tc.in, "binary_name") && !strings.Contains(string(out), "binary_name = '/usr/bin/runsc'") {
				t.Errorf("binary_name lost:\n%s", out)
			}
		})
	}
}

func TestRunscBinary(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{"", "runsc", false},
		{"binary_name = \"/usr/bin/runsc\"\n", "/usr/bin/runsc", false},
		{"[runsc_config]\ndebug = \"true\"\n", "runsc", false},
		{"binary_name = [", "", true},
	} {
		got, err := Binary([]byte(tc.in))
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("Binary(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
