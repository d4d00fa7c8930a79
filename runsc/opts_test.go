package runsc

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"
)

func TestEnableSystemdCgroup(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		want        map[string]any // decoded output; nil means "output == input"
		wantChanged bool
		wantErr     bool
	}{
		{
			name:        "empty input",
			in:          "",
			want:        map[string]any{"runsc_config": map[string]any{"systemd-cgroup": "true"}},
			wantChanged: true,
		},
		{
			name:        "whitespace and comments only",
			in:          "# nothing\n\n",
			want:        map[string]any{"runsc_config": map[string]any{"systemd-cgroup": "true"}},
			wantChanged: true,
		},
		{
			name: "testbed runsc-new.toml",
			in: `binary_name = "/usr/local/bin/runsc-new"
root = "/run/containerd/runsc"
log_level = "debug"
log_path = "/var/log/runsc/shim/"
grouping = true
io_uid = 0

[runsc_config]
debug = "true"
debug-log = "/var/log/runsc/"
network = "none"
`,
			want: map[string]any{
				"binary_name": "/usr/local/bin/runsc-new", "root": "/run/containerd/runsc",
				"log_level": "debug", "log_path": "/var/log/runsc/shim/", "grouping": true, "io_uid": int64(0),
				"runsc_config": map[string]any{
					"debug": "true", "debug-log": "/var/log/runsc/", "network": "none", "systemd-cgroup": "true",
				},
			},
			wantChanged: true,
		},
		{
			name: "explicitly off is turned on",
			in:   "[runsc_config]\nsystemd-cgroup = \"false\"\n",
			want: map[string]any{"runsc_config": map[string]any{"systemd-cgroup": "true"}}, wantChanged: true,
		},
		{
			name: "boolean true is rewritten as the string the shim can decode",
			in:   "[runsc_config]\nsystemd-cgroup = true\n",
			want: map[string]any{"runsc_config": map[string]any{"systemd-cgroup": "true"}}, wantChanged: true,
		},
		{
			name: "already on: untouched",
			in:   "binary_name = \"/usr/bin/runsc\" # Debian\n[runsc_config]\n  systemd-cgroup = \"true\"\n",
		},
		{name: "runsc_config is not a table", in: "runsc_config = \"x\"\n", wantErr: true},
		{name: "invalid toml", in: "[runsc_config\n", wantErr: true},
		{name: "duplicate key", in: "a = 1\na = 2\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changed, err := EnableSystemdCgroup([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("EnableSystemdCgroup(%q) = %q, %v, nil, want an error", tt.in, out, changed)
				}
				return
			}
			if err != nil {
				t.Fatalf("EnableSystemdCgroup(%q) error = %v", tt.in, err)
			}
			if changed != tt.wantChanged {
				t.Errorf("EnableSystemdCgroup(%q) changed = %v, want %v", tt.in, changed, tt.wantChanged)
			}
			if tt.want == nil {
				if !bytes.Equal(out, []byte(tt.in)) {
					t.Errorf("EnableSystemdCgroup(%q) = %q, want the input unchanged", tt.in, out)
				}
			} else {
				var got map[string]any
				if err := toml.Unmarshal(out, &got); err != nil {
					t.Fatalf("EnableSystemdCgroup(%q) output %q does not parse: %v", tt.in, out, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("EnableSystemdCgroup(%q) mismatch (-want +got):\n%s", tt.in, diff)
				}
			}
			// Idempotent: a second pass changes nothing.
			again, changed2, err := EnableSystemdCgroup(out)
			if err != nil || changed2 || !bytes.Equal(again, out) {
				t.Errorf("EnableSystemdCgroup(EnableSystemdCgroup(%q)) = %q, %v, %v, want the same bytes, false, nil", tt.in, again, changed2, err)
			}
		})
	}
}

// TestEnableSystemdCgroupShimDecode: the runsc shim decodes runsc_config as
// map[string]string; the output must decode that way.
func TestEnableSystemdCgroupShimDecode(t *testing.T) {
	out, _, err := EnableSystemdCgroup([]byte("binary_name = \"runsc\"\n[runsc_config]\nnetwork = \"none\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		BinaryName  string            `toml:"binary_name"`
		RunscConfig map[string]string `toml:"runsc_config"`
	}
	if err := toml.Unmarshal(out, &opts); err != nil {
		t.Fatalf("shim-style decode of %q: %v", out, err)
	}
	want := map[string]string{"network": "none", "systemd-cgroup": "true"}
	if diff := cmp.Diff(want, opts.RunscConfig); diff != "" || opts.BinaryName != "runsc" {
		t.Errorf("shim-style decode of %q: binary_name %q, runsc_config mismatch (-want +got):\n%s", out, opts.BinaryName, diff)
	}
}
