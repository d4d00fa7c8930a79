package cgroupfix

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExpandSlice(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"root slice", "-.slice", "/", nil},
		{"top level", "system.slice", "/system.slice", nil},
		{"two levels", "kubepods-burstable.slice", "/kubepods.slice/kubepods-burstable.slice", nil},
		{"pod slice", "kubepods-burstable-" + podUID + ".slice",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" + podUID + ".slice", nil},
		{"guaranteed pod", "kubepods-" + podUID + ".slice", "/kubepods.slice/kubepods-" + podUID + ".slice", nil},
		{"abc", "a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice", nil},
		{"escaped char kept", `a\x2db.slice`, `/a\x2db.slice`, nil},
		{"no suffix", "kubepods", "", ErrInvalidSlice},
		{"scope not slice", "cri-containerd-x.scope", "", ErrInvalidSlice},
		{"empty", "", "", ErrInvalidSlice},
		{"empty name", ".slice", "", ErrInvalidSlice},
		{"double dash", "a--b.slice", "", ErrInvalidSlice},
		{"leading dash", "-a.slice", "", ErrInvalidSlice},
		{"trailing dash", "a-.slice", "", ErrInvalidSlice},
		{"slash", "a/b.slice", "", ErrInvalidSlice},
		{"dotdot slash", "../../etc.slice", "", ErrInvalidSlice},
		{"NUL", "a\x00b.slice", "", ErrInvalidSlice},
		{"space", "a b.slice", "", ErrInvalidSlice},
		{"too long", strings.Repeat("a", 250) + ".slice", "", ErrInvalidSlice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExpandSlice(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("ExpandSlice(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("ExpandSlice(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsSystemdPath(t *testing.T) {
	tests := []struct {
		name, in string
		want     bool
	}{
		{"kubelet systemd", "kubepods-burstable-" + podUID + ".slice:cri-containerd:" + sandbox, true},
		{"empty slice", ":runsc:abc", true},
		{"cgroupfs", "/kubepods/burstable/" + podUIDfs + "/" + sandbox, false},
		{"relative cgroupfs", "kubepods/burstable/x", false},
		{"old runsc literal dir", "/system.slice/kubepods-burstable-podX.slice:cri-containerd:x", false},
		{"two parts", "a.slice:x", false},
		{"four parts", "a.slice:x:y:z", false},
		{"slice without suffix", "kubepods:cri-containerd:x", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsSystemdPath(tt.in); got != tt.want {
				t.Errorf("IsSystemdPath(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCgroupsPath(t *testing.T) {
	podSlice := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" + podUID + ".slice"
	tests := []struct {
		name string
		in   string
		want CgroupsPath
		err  error
	}{
		{
			name: "systemd burstable",
			in:   "kubepods-burstable-" + podUID + ".slice:cri-containerd:" + sandbox,
			want: CgroupsPath{
				Driver: DriverSystemd, Raw: "kubepods-burstable-" + podUID + ".slice:cri-containerd:" + sandbox,
				Slice: "kubepods-burstable-" + podUID + ".slice", Prefix: "cri-containerd", Name: sandbox,
				Dir:    podSlice + "/cri-containerd-" + sandbox + ".scope",
				Parent: podSlice,
			},
		},
		{
			name: "systemd brief example",
			in:   "kubepods-burstable-pod123.slice:cri-containerd:abc",
			want: CgroupsPath{
				Driver: DriverSystemd, Raw: "kubepods-burstable-pod123.slice:cri-containerd:abc",
				Slice: "kubepods-burstable-pod123.slice", Prefix: "cri-containerd", Name: "abc",
				Dir:    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice/cri-containerd-abc.scope",
				Parent: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice",
			},
		},
		{
			name: "systemd empty slice is system.slice",
			in:   ":runsc:abc",
			want: CgroupsPath{Driver: DriverSystemd, Raw: ":runsc:abc", Slice: "system.slice", Prefix: "runsc", Name: "abc",
				Dir: "/system.slice/runsc-abc.scope", Parent: "/system.slice"},
		},
		{
			name: "systemd name is a slice",
			in:   "kubepods.slice::kubepods-besteffort.slice",
			want: CgroupsPath{Driver: DriverSystemd, Raw: "kubepods.slice::kubepods-besteffort.slice", Slice: "kubepods.slice",
				Name: "kubepods-besteffort.slice", Dir: "/kubepods.slice/kubepods-besteffort.slice", Parent: "/kubepods.slice"},
		},
		// Single-part paths would make the root cgroup the pod's: every
		// process would count as inside the pod.
		{name: "systemd root slice", in: "-.slice:p:n", err: ErrInvalidPath},
		{name: "one cgroupfs part", in: "/etc", err: ErrInvalidPath},
		{name: "dot", in: ".", err: ErrInvalidPath},
		{name: "root", in: "/", err: ErrInvalidPath},
		{
			name: "cgroupfs",
			in:   "/kubepods/burstable/" + podUIDfs + "/" + sandbox,
			want: CgroupsPath{Driver: DriverCgroupfs, Raw: "/kubepods/burstable/" + podUIDfs + "/" + sandbox,
				Dir: "/kubepods/burstable/" + podUIDfs + "/" + sandbox, Parent: "/kubepods/burstable/" + podUIDfs},
		},
		{
			name: "cgroupfs relative and unclean",
			in:   "kubepods//besteffort/./podX/c1/",
			want: CgroupsPath{Driver: DriverCgroupfs, Raw: "kubepods//besteffort/./podX/c1/",
				Dir: "/kubepods/besteffort/podX/c1", Parent: "/kubepods/besteffort/podX"},
		},
		{
			name: "old runsc literal dir is a cgroupfs path",
			in:   "/system.slice/kubepods-burstable-podX.slice:cri-containerd:c",
			want: CgroupsPath{Driver: DriverCgroupfs, Raw: "/system.slice/kubepods-burstable-podX.slice:cri-containerd:c",
				Dir: "/system.slice/kubepods-burstable-podX.slice:cri-containerd:c", Parent: "/system.slice"},
		},
		{name: "empty", in: "", err: ErrEmptyPath},
		{name: "NUL", in: "/kubepods/a\x00b", err: ErrInvalidPath},
		{name: "dotdot", in: "/kubepods/../../etc", err: ErrPathEscape},
		{name: "dotdot relative", in: "../x", err: ErrPathEscape},
		{name: "dotdot trailing", in: "/a/..", err: ErrPathEscape},
		{name: "systemd bad slice", in: "kubepods--x.slice:cri-containerd:abc", err: ErrInvalidSlice},
		{name: "systemd leading dash slice", in: "-kubepods.slice:cri-containerd:abc", err: ErrInvalidSlice},
		{name: "systemd empty name", in: "kubepods.slice:cri-containerd:", err: ErrInvalidPath},
		{name: "systemd slash in name", in: "kubepods.slice:cri:../../etc", err: ErrInvalidPath},
		{
			// ".." only ever ends up inside a unit name, never as a path
			// component.
			name: "systemd dotdot name stays a unit name",
			in:   "kubepods.slice:cri:..",
			want: CgroupsPath{Driver: DriverSystemd, Raw: "kubepods.slice:cri:..", Slice: "kubepods.slice", Prefix: "cri", Name: "..",
				Dir: "/kubepods.slice/cri-...scope", Parent: "/kubepods.slice"},
		},
		{name: "systemd space in prefix", in: "kubepods.slice:a b:c", err: ErrInvalidPath},
		{name: "systemd bad child slice", in: "kubepods.slice::x--y.slice", err: ErrInvalidSlice},
		{name: "slice without suffix", in: "kubepods:cri-containerd:abc", err: ErrInvalidPath},
		{name: "slash in slice", in: "a/b.slice:cri:abc", err: ErrInvalidPath},
		{name: "too long unit", in: "a.slice:p:" + strings.Repeat("x", 300), err: ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCgroupsPath(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseCgroupsPath(%q) error = %v, want %v", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCgroupsPath(%q) error = %v, want nil", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseCgroupsPath(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestCgroupsPathUnit(t *testing.T) {
	tests := []struct{ in, want string }{
		{"kubepods-burstable-pod1.slice:cri-containerd:abc", "cri-containerd-abc.scope"},
		{"kubepods.slice::kubepods-besteffort.slice", "kubepods-besteffort.slice"},
		{"/kubepods/burstable/pod1/abc", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			cp, err := ParseCgroupsPath(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := cp.Unit(); got != tt.want {
				t.Errorf("ParseCgroupsPath(%q).Unit() = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
