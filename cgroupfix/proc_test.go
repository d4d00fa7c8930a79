package cgroupfix

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Command lines from reference/gvisor-oom-debug.md: a production node with
// the bug (host RAM as --total-memory) and a node without it.
var (
	prodSandboxArgs = []string{
		"runsc-sandbox", "--log-format=json",
		"--panic-log=/var/log/pods/default_memory-eater-python-74975bf59f-7fflh_1cf55082-d769-4a51-a424-2312c23eae82/gvisor_panic.log",
		"--root=/run/containerd/runsc/k8s.io",
		"--log=/run/containerd/io.containerd.runtime.v2.task/k8s.io/6a541285fa39d743dc20bd8b3169c4a8f5cd4d77542144fe82d3f6f7af469c2c/log.json",
		"--log-fd=3", "--panic-log-fd=4", "boot", "--apply-caps=false",
		"--bundle=/run/containerd/io.containerd.runtime.v2.task/k8s.io/6a541285fa39d743dc20bd8b3169c4a8f5cd4d77542144fe82d3f6f7af469c2c",
		"--controller-fd=10", "--cpu-num=96", "--io-fds=5,6", "--mounts-fd=7", "--overlay-mediums=0,0",
		"--setup-root=false", "--spec-fd=11", "--start-sync-fd=8", "--stdio-fds=12,13,14",
		"--total-host-memory=540886331392", "--total-memory=540886331392", "--user-log-fd=9",
		"--product-name=AS", "-4124GS-TNR", "--proc-mount-sync-fd=22",
		"6a541285fa39d743dc20bd8b3169c4a8f5cd4d77542144fe82d3f6f7af469c2c",
	}
	localSandboxArgs = []string{
		"runsc-sandbox", "--root=/run/containerd/runsc/k8s.io",
		"--log=/run/containerd/io.containerd.runtime.v2.task/k8s.io/f11a26742777348875e6c7f182d9f8cc5c4a1c3a7f726ad5e8cb956b0c2dea96/log.json",
		"--log-format=json", "--log-fd=3", "--panic-log-fd=4", "boot", "--apply-caps=false",
		"--bundle=/run/containerd/io.containerd.runtime.v2.task/k8s.io/f11a26742777348875e6c7f182d9f8cc5c4a1c3a7f726ad5e8cb956b0c2dea96",
		"--controller-fd=10", "--cpu-num=6", "--dev-io-fd=-1", "--gofer-mount-confs=lisafs:none,lisafs:none",
		"--io-fds=5,6", "--mounts-fd=7", "--setup-root=false", "--spec-fd=11", "--start-sync-fd=8",
		"--stdio-fds=12,13,14", "--total-host-memory=2061119488", "--total-memory=268435456",
		"--user-log-fd=9", "--proc-mount-sync-fd=22",
		"f11a26742777348875e6c7f182d9f8cc5c4a1c3a7f726ad5e8cb956b0c2dea96",
	}
)

func cmdline(args ...string) string { return strings.Join(args, "\x00") + "\x00" }

func TestParseSandboxCmdline(t *testing.T) {
	prodBundle := "/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + sandbox
	tests := []struct {
		name string
		in   string
		want SandboxFlags
		err  error
	}{
		{
			name: "production node, host RAM",
			in:   cmdline(prodSandboxArgs...),
			want: SandboxFlags{TotalMemory: 540886331392, TotalHostMemory: 540886331392, CPUNum: 96, Bundle: prodBundle, ContainerID: sandbox},
		},
		{
			name: "fixed node, pod limit",
			in:   cmdline(localSandboxArgs...),
			want: SandboxFlags{TotalMemory: mib256, TotalHostMemory: 2061119488, CPUNum: 6,
				Bundle:      "/run/containerd/io.containerd.runtime.v2.task/k8s.io/f11a26742777348875e6c7f182d9f8cc5c4a1c3a7f726ad5e8cb956b0c2dea96",
				ContainerID: "f11a26742777348875e6c7f182d9f8cc5c4a1c3a7f726ad5e8cb956b0c2dea96"},
		},
		{
			name: "old runsc without total-host-memory, no trailing NUL",
			in:   strings.Join([]string{"runsc-sandbox", "--root=/r", "boot", "--total-memory=4103290880", "--cpu-num=2", "id1"}, "\x00"),
			want: SandboxFlags{TotalMemory: 4103290880, CPUNum: 2, ContainerID: "id1"},
		},
		{
			name: "space separated and single dash forms",
			in:   cmdline("runsc-sandbox", "boot", "-total-memory", "1024", "--cpu-num", "4", "-bundle=/b", "--debug", "id2"),
			want: SandboxFlags{TotalMemory: 1024, CPUNum: 4, Bundle: "/b", ContainerID: "id2"},
		},
		{
			name: "later flag wins",
			in:   cmdline("runsc-sandbox", "boot", "--total-memory=1", "--total-memory=2", "id"),
			want: SandboxFlags{TotalMemory: 2, ContainerID: "id"},
		},
		{
			name: "global flags before boot are not boot flags",
			in:   cmdline("runsc-sandbox", "--total-memory=99", "boot", "id"),
			want: SandboxFlags{ContainerID: "id"},
		},
		{
			name: "no id",
			in:   cmdline("runsc-sandbox", "boot", "--total-memory=5"),
			want: SandboxFlags{TotalMemory: 5},
		},
		{name: "gofer is not a sandbox", in: cmdline("runsc-gofer", "--root=/r", "gofer", "--bundle=/b"), err: ErrNotSandbox},
		{name: "empty", in: "", err: ErrNotSandbox},
		{name: "boot as argv0", in: cmdline("boot", "x"), err: ErrNotSandbox},
		{name: "garbage total-memory", in: cmdline("runsc-sandbox", "boot", "--total-memory=lots", "id"), err: strconv.ErrSyntax},
		{name: "negative total-memory", in: cmdline("runsc-sandbox", "boot", "--total-memory=-1", "id"), err: ErrNegative},
		{name: "overflow total-memory", in: cmdline("runsc-sandbox", "boot", "--total-memory=18446744073709551616", "id"), err: strconv.ErrRange},
		{name: "huge cpu-num", in: cmdline("runsc-sandbox", "boot", "--cpu-num=99999999999", "id"), err: strconv.ErrRange},
		{name: "flag without value", in: cmdline("runsc-sandbox", "boot", "--total-memory"), err: errMissingValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSandboxCmdline(strings.NewReader(tt.in))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseSandboxCmdline(%q) = %+v, %v, want error %v", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSandboxCmdline(%q) error = %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSandboxCmdline(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		wantV2 string
		wantV1 map[string]string
		bad    bool
	}{
		{
			name:   "v2 in the pod",
			in:     "0::" + burstableLeaf + "\n",
			wantV2: burstableLeaf,
		},
		{
			name:   "v2 misplaced, colons in the path",
			in:     "0::" + misplaced + "\n",
			wantV2: misplaced,
		},
		{
			name: "v1",
			in: "12:memory:/kubepods/burstable/pod1/c1\n" +
				"4:cpu,cpuacct:/kubepods/burstable/pod1/c1\n" +
				"1:name=systemd:/system.slice/containerd.service\n" +
				"0::/system.slice/containerd.service\n",
			wantV2: "/system.slice/containerd.service",
			wantV1: map[string]string{
				"memory": "/kubepods/burstable/pod1/c1", "cpu": "/kubepods/burstable/pod1/c1",
				"cpuacct": "/kubepods/burstable/pod1/c1", "name=systemd": "/system.slice/containerd.service",
			},
		},
		{name: "empty", in: ""},
		{name: "no colon", in: "garbage\n", bad: true},
		{name: "relative path", in: "0::system.slice\n", bad: true},
		{name: "bad hierarchy id", in: "x:memory:/a\n", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v2, v1, err := ParseProcCgroup(strings.NewReader(tt.in))
			if tt.bad {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("ParseProcCgroup(%q) = %q, %v, %v, want a *ParseError", tt.in, v2, v1, err)
				}
				return
			}
			if err != nil || v2 != tt.wantV2 {
				t.Errorf("ParseProcCgroup(%q) = %q, %v, want %q, nil", tt.in, v2, err, tt.wantV2)
			}
			if diff := cmp.Diff(tt.wantV1, v1); diff != "" {
				t.Errorf("ParseProcCgroup(%q) v1 mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// fakeProc writes <pid>/cmdline and <pid>/cgroup under a temp /proc.
func fakeProc(t *testing.T, procs map[int][2]string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{"self/cmdline": "x\x00", "sys/": "", "1/cmdline": cmdline("/sbin/init"), "1/cgroup": "0::/init.scope\n"}
	for pid, p := range procs {
		files[strconv.Itoa(pid)+"/cmdline"] = p[0]
		files[strconv.Itoa(pid)+"/cgroup"] = p[1]
	}
	writeTree(t, root, files)
	return root
}

func TestFindSandboxAndGofers(t *testing.T) {
	bundle := "/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + sandbox
	appBundle := "/run/containerd/io.containerd.runtime.v2.task/k8s.io/app1"
	procRoot := fakeProc(t, map[int][2]string{
		// The seed's misplaced sandbox (runsc-deb, docs/upstream.md#placement).
		4242: {cmdline(prodSandboxArgs...), "0::" + misplaced + "\n"},
		4243: {cmdline("runsc-gofer", "--root=/r", "gofer", "--bundle="+bundle, "--spec-fd=3"), "0::" + misplaced + "\n"},
		// An app container's gofer left in containerd.service.
		4300: {cmdline("runsc-gofer", "--root=/r", "gofer", "--bundle", appBundle+"/"), "0::/system.slice/containerd.service\n"},
		// Another pod's sandbox, and noise.
		5000: {cmdline(localSandboxArgs...), "0::/kubepods.slice/other\n"},
		5001: {cmdline("bash", "-c", "runsc-sandbox boot "+sandbox), "0::/user.slice\n"},
		5002: {"", ""}, // kernel thread: empty cmdline
		5003: {cmdline("runsc-sandbox", "boot", "--total-memory=x", sandbox), "0::/x\n"},
	})

	pid, flags, err := FindSandbox(procRoot, sandbox)
	if err != nil {
		t.Fatalf("FindSandbox(%q) error = %v", sandbox, err)
	}
	if pid != 4242 || flags.TotalMemory != 540886331392 || flags.CPUNum != 96 || flags.Bundle != bundle {
		t.Errorf("FindSandbox(%q) = %d, %+v, want 4242 with the production flags", sandbox, pid, flags)
	}
	if _, _, err := FindSandbox(procRoot, "nope"); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("FindSandbox(%q) error = %v, want %v", "nope", err, ErrSandboxNotFound)
	}
	if _, _, err := FindSandbox(procRoot, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("FindSandbox(%q) error = %v, want %v", "", err, ErrInvalidArgument)
	}
	if _, _, err := FindSandbox(filepath.Join(procRoot, "missing"), sandbox); err == nil {
		t.Errorf("FindSandbox on a missing /proc = nil error, want one")
	}

	gofers, err := FindGofers(procRoot, bundle)
	if err != nil {
		t.Fatal(err)
	}
	want := []Proc{{PID: 4243, Argv0: "runsc-gofer", Cgroup: misplaced}}
	if diff := cmp.Diff(want, gofers); diff != "" {
		t.Errorf("FindGofers(%q) mismatch (-want +got):\n%s", bundle, diff)
	}
	gofers, err = FindGofers(procRoot, appBundle)
	if err != nil {
		t.Fatal(err)
	}
	want = []Proc{{PID: 4300, Argv0: "runsc-gofer", Cgroup: "/system.slice/containerd.service"}}
	if diff := cmp.Diff(want, gofers); diff != "" {
		t.Errorf("FindGofers(%q) mismatch (-want +got):\n%s", appBundle, diff)
	}
	for _, g := range gofers {
		if Within(burstablePod, g.Cgroup) {
			t.Errorf("Within(%q, %q) = true, want false", burstablePod, g.Cgroup)
		}
	}
	if _, err := FindGofers(procRoot, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("FindGofers(%q) error = %v, want %v", "", err, ErrInvalidArgument)
	}

	t.Run("two sandboxes for one id", func(t *testing.T) {
		procRoot := fakeProc(t, map[int][2]string{
			10: {cmdline(prodSandboxArgs...), "0::/a\n"},
			11: {cmdline(prodSandboxArgs...), "0::/a\n"},
		})
		if _, _, err := FindSandbox(procRoot, sandbox); !errors.Is(err, ErrMultipleSandboxes) {
			t.Errorf("FindSandbox(%q) error = %v, want %v", sandbox, err, ErrMultipleSandboxes)
		}
	})
	t.Run("v1 gofer cgroup is the memory path", func(t *testing.T) {
		procRoot := fakeProc(t, map[int][2]string{
			20: {cmdline("runsc-gofer", "gofer", "--bundle=/b"), "4:memory:/kubepods/burstable/pod1/c\n1:name=systemd:/x\n"},
		})
		got, err := FindGofers(procRoot, "/b")
		if err != nil || len(got) != 1 || got[0].Cgroup != "/kubepods/burstable/pod1/c" {
			t.Errorf("FindGofers(%q) = %+v, %v, want one gofer in /kubepods/burstable/pod1/c", "/b", got, err)
		}
	})
	t.Run("gofer with garbage cgroup file", func(t *testing.T) {
		procRoot := fakeProc(t, map[int][2]string{
			20: {cmdline("runsc-gofer", "gofer", "--bundle=/b"), "junk\n"},
		})
		if got, err := FindGofers(procRoot, "/b"); err == nil {
			t.Errorf("FindGofers(%q) = %+v, nil, want an error", "/b", got)
		}
	})
	t.Run("gofer that exited", func(t *testing.T) {
		procRoot := fakeProc(t, map[int][2]string{
			20: {cmdline("runsc-gofer", "gofer", "--bundle=/b"), ""},
		})
		if err := os.Remove(filepath.Join(procRoot, "20", "cgroup")); err != nil {
			t.Fatal(err)
		}
		if got, err := FindGofers(procRoot, "/b"); err != nil || len(got) != 0 {
			t.Errorf("FindGofers(%q) = %+v, %v, want none, nil", "/b", got, err)
		}
	})
}

// TestScanRunsc: one pass over /proc finds sandboxes (with their global
// --root) and gofers (with their --bundle, in every form Go's flag package
// accepts, the last one winning) and nothing else.
func TestScanRunsc(t *testing.T) {
	procRoot := fakeProc(t, map[int][2]string{
		1:  {cmdline("/sbin/init"), "0::/init.scope\n"},
		2:  {cmdline("runsc-sandbox", "--root=/run/containerd/runsc/k8s.io", "--debug", "boot", "--bundle=/b/s", "--total-memory", "268435456", "s"), "0::/pod/s.scope\n"},
		3:  {cmdline("runsc-sandbox", "-root", "/r/ns", "boot", "t"), "0::/pod\n"},
		4:  {cmdline("runsc-sandbox", "--root=/r", "start", "x"), "0::/x\n"}, // no boot: not a sandbox
		5:  {cmdline("runsc-gofer", "gofer", "--bundle=/b/1"), "0::/g1\n"},
		6:  {cmdline("runsc-gofer", "gofer", "-bundle", "/b/2"), "0::/g2\n"},
		7:  {cmdline("runsc-gofer", "gofer", "--bundle", "/b/x", "--bundle=/b/3"), "0::/g3\n"},
		8:  {cmdline("runsc-gofer", "gofer", "--bundles=/x", "bundle", "/y"), "0::/g4\n"}, // no --bundle
		9:  {cmdline("runsc-gofer", "gofer", "--bundle"), "0::/g5\n"},                     // no value
		10: {cmdline("/usr/local/bin/runsc-gofer", "gofer", "--bundle=/b/4"), "0::/g6\n"},
	})
	got, err := ScanRunsc(procRoot)
	if err != nil {
		t.Fatal(err)
	}
	want := []RunscProc{
		{Proc: Proc{PID: 2, Argv0: "runsc-sandbox", Cgroup: "/pod/s.scope"}, Root: "/run/containerd/runsc/k8s.io", Bundle: "/b/s",
			Sandbox: SandboxFlags{TotalMemory: 268435456, Bundle: "/b/s", ContainerID: "s"}},
		{Proc: Proc{PID: 3, Argv0: "runsc-sandbox", Cgroup: "/pod"}, Root: "/r/ns", Sandbox: SandboxFlags{ContainerID: "t"}},
		{Proc: Proc{PID: 5, Argv0: "runsc-gofer", Cgroup: "/g1"}, Bundle: "/b/1"},
		{Proc: Proc{PID: 6, Argv0: "runsc-gofer", Cgroup: "/g2"}, Bundle: "/b/2"},
		{Proc: Proc{PID: 7, Argv0: "runsc-gofer", Cgroup: "/g3"}, Bundle: "/b/3"},
		{Proc: Proc{PID: 10, Argv0: "/usr/local/bin/runsc-gofer", Cgroup: "/g6"}, Bundle: "/b/4"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ScanRunsc() mismatch (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if p.IsSandbox() != (p.PID <= 3) {
			t.Errorf("pid %d IsSandbox() = %v", p.PID, p.IsSandbox())
		}
	}
	if _, err := ScanRunsc(filepath.Join(procRoot, "missing")); err == nil {
		t.Error("ScanRunsc on a missing /proc = nil error, want one")
	}
}

func TestProcsInCgroup(t *testing.T) {
	tests := []struct {
		name    string
		version Version
		files   map[string]string
		dir     string
		want    []int
		wantErr bool
	}{
		{"v2", V2, map[string]string{misplaced[1:] + "/cgroup.procs": "4242\n4243\n4250\n"}, misplaced, []int{4242, 4243, 4250}, false},
		{"v2 empty", V2, map[string]string{"a/cgroup.procs": ""}, "/a", nil, false},
		{"v1 memory hierarchy", V1, map[string]string{"memory/a/cgroup.procs": "7\n"}, "/a", []int{7}, false},
		{"missing", V2, map[string]string{"a/": ""}, "/b", nil, true},
		{"garbage", V2, map[string]string{"a/cgroup.procs": "7\nx\n"}, "/a", nil, true},
		{"zero pid", V2, map[string]string{"a/cgroup.procs": "0\n"}, "/a", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			got, err := ProcsInCgroup(Hierarchy{Root: root, Version: tt.version}, tt.dir)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ProcsInCgroup(%q) = %v, %v, want error %v", tt.dir, got, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ProcsInCgroup(%q) mismatch (-want +got):\n%s", tt.dir, diff)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		pod, cg string
		want    bool
	}{
		{"/a/pod1", "/a/pod1", true},
		{"/a/pod1", "/a/pod1/c1", true},
		{"/a/pod1", "/a/pod10", false},
		{"/a/pod1", "/a/pod1x/c", false},
		{"/a/pod1", "/a", false},
		{"/a/pod1/", "/a/pod1/c", true},
		{"a/pod1", "/a/pod1/c", true},
		{"/a/pod1", "/a/pod1/../../x", false},
		{"/a/pod1", "/a/pod1/c/../../pod1/d", true},
		{burstablePod, burstableLeaf, true},
		{burstablePod, misplaced, false},
		{burstablePod, "/system.slice/containerd.service", false},
		{"/", "/anything", true},
		{"", "/a", false},
		{"/a", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.pod+" "+tt.cg, func(t *testing.T) {
			if got := Within(tt.pod, tt.cg); got != tt.want {
				t.Errorf("Within(%q, %q) = %v, want %v", tt.pod, tt.cg, got, tt.want)
			}
		})
	}
}
