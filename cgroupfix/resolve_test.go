package cgroupfix

import (
	"errors"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Paths of the fake systemd v2 tree, as kubelet (systemd driver) and
// systemd lay them out.
const (
	kubepods      = "/kubepods.slice"
	burstable     = kubepods + "/kubepods-burstable.slice"
	burstablePod  = burstable + "/kubepods-burstable-" + podUID + ".slice"
	burstableLeaf = burstablePod + "/cri-containerd-" + sandbox + ".scope"
	guaranteedPod = kubepods + "/kubepods-" + podUID + ".slice"
	besteffort    = kubepods + "/kubepods-besteffort.slice"
	besteffortPod = besteffort + "/kubepods-besteffort-" + podUID + ".slice"
	// misplaced is where runsc without systemd-cgroup, before
	// release-20260615.0, puts the sandbox (docs/upstream.md#placement).
	misplaced = "/system.slice/kubepods-burstable-" + podUID + ".slice:cri-containerd:" + sandbox
)

var (
	burstablePath  = "kubepods-burstable-" + podUID + ".slice:cri-containerd:" + sandbox
	guaranteedPath = "kubepods-" + podUID + ".slice:cri-containerd:" + sandbox
	besteffortPath = "kubepods-besteffort-" + podUID + ".slice:cri-containerd:" + sandbox
)

// systemdV2Tree is a cgroup v2 host with the systemd driver: the burstable
// pod slice carries 256 MiB and 100m CPU, everything else says "max"; the
// misplaced sandbox directory under system.slice exists too, with "max".
func systemdV2Tree(withLeaf bool) map[string]string {
	t := merge(
		map[string]string{"cgroup.controllers": "cpuset cpu io memory pids\n", "cgroup.procs": "1\n"},
		v2Cgroup(kubepods[1:], "max", "max 100000"),
		v2Cgroup(burstable[1:], "max", "max 100000"),
		v2Cgroup(burstablePod[1:], "268435456", "10000 100000"),
		v2Cgroup(guaranteedPod[1:], "536870912", "200000 100000"),
		v2Cgroup(besteffort[1:], "max", "max 100000"),
		v2Cgroup(besteffortPod[1:], "max", "max 100000"),
		v2Cgroup("system.slice", "max", "max 100000"),
		v2Cgroup(misplaced[1:], "max", "max 100000"),
	)
	if withLeaf {
		t = merge(t, v2Cgroup(burstableLeaf[1:], "max", "max 100000"))
	}
	return t
}

func memSpec(limit int64) *specs.Spec {
	return &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}}}
}

func cgroupSrc(path string, l Limits) Source { return Source{Kind: KindCgroup, Path: path, Limits: l} }

// checkNeverLoosens asserts the invariant Resolve promises: Effective is
// never above any finite cgroup or spec source.
func checkNeverLoosens(t *testing.T, res Resolution) {
	t.Helper()
	for _, s := range res.Sources {
		if s.Kind == KindAnnotation {
			continue
		}
		if s.Limits.MemoryLimited() && (!res.Effective.MemoryLimited() || res.Effective.MemoryBytes > s.Limits.MemoryBytes) {
			t.Errorf("Effective memory %d looser than %s %s: %d", res.Effective.MemoryBytes, s.Kind, s.Path, s.Limits.MemoryBytes)
		}
		if cpuLess(s.Limits, res.Effective) {
			t.Errorf("Effective CPU %+v looser than %s %s: %+v", res.Effective, s.Kind, s.Path, s.Limits)
		}
	}
}

func TestResolve(t *testing.T) {
	podLimits := Limits{MemoryBytes: mib256, CPUQuota: 10000, CPUPeriod: 100000}
	burstableSources := []Source{
		cgroupSrc(burstablePod, podLimits),
		cgroupSrc(burstable, Limits{}),
		cgroupSrc(kubepods, Limits{}),
		cgroupSrc("/", Limits{}),
	}
	tests := []struct {
		name    string
		version Version
		files   map[string]string
		in      ResolveInput
		want    Resolution // Path is not compared
		// wantWarn are substrings, one per expected warning, in order.
		wantWarn []string
	}{
		{
			name: "v2 systemd burstable at Create (no leaf yet)", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: burstablePath},
			want:  Resolution{PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits},
		},
		{
			name: "v2 systemd burstable with max on the scope", version: V2,
			files: systemdV2Tree(true),
			in:    ResolveInput{CgroupsPath: burstablePath},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources:   append([]Source{cgroupSrc(burstableLeaf, Limits{})}, burstableSources...),
				Effective: podLimits,
			},
		},
		{
			// Pod-level resources (KEP-2837): the containers declare no
			// limit of their own, kubelet writes the pod's into the pod
			// slice and into the sandbox resources containerd turns into
			// the annotations. Resolved as any pod limit, no warning.
			name: "v2 systemd pod-level resources", version: V2,
			files: systemdV2Tree(false),
			in: ResolveInput{CgroupsPath: burstablePath, Annotations: map[string]string{
				cri.SandboxMemory: "268435456", cri.SandboxCPUQuota: "10000", cri.SandboxCPUPeriod: "100000",
			}},
			want: Resolution{PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits,
				Annotation: &Limits{MemoryBytes: mib256, CPUQuota: 10000, CPUPeriod: 100000}},
		},
		{
			name: "v2 systemd guaranteed", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: guaranteedPath},
			want: Resolution{
				PodCgroup: guaranteedPod,
				Sources: []Source{
					cgroupSrc(guaranteedPod, Limits{MemoryBytes: 536870912, CPUQuota: 200000, CPUPeriod: 100000}),
					cgroupSrc(kubepods, Limits{}),
					cgroupSrc("/", Limits{}),
				},
				Effective: Limits{MemoryBytes: 536870912, CPUQuota: 200000, CPUPeriod: 100000},
			},
		},
		{
			name: "v2 systemd besteffort is unlimited", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: besteffortPath},
			want: Resolution{
				PodCgroup: besteffortPod,
				Sources: []Source{
					cgroupSrc(besteffortPod, Limits{}),
					cgroupSrc(besteffort, Limits{}),
					cgroupSrc(kubepods, Limits{}),
					cgroupSrc("/", Limits{}),
				},
				Effective: Limits{},
			},
		},
		{
			name: "node allocatable on kubepods.slice lower than the pod", version: V2,
			files: merge(systemdV2Tree(false), v2Cgroup(kubepods[1:], "209715200", "max 100000")),
			in:    ResolveInput{CgroupsPath: burstablePath},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources: []Source{
					cgroupSrc(burstablePod, podLimits),
					cgroupSrc(burstable, Limits{}),
					cgroupSrc(kubepods, Limits{MemoryBytes: 209715200}),
					cgroupSrc("/", Limits{}),
				},
				Effective: Limits{MemoryBytes: 209715200, CPUQuota: 10000, CPUPeriod: 100000},
			},
		},
		{
			name: "spec limit lower than the cgroup wins", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: burstablePath, Spec: memSpec(134217728)},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources:   append(append([]Source{}, burstableSources...), Source{Kind: KindSpec, Path: "linux.resources", Limits: Limits{MemoryBytes: 134217728}}),
				Effective: Limits{MemoryBytes: 134217728, CPUQuota: 10000, CPUPeriod: 100000},
			},
		},
		{
			name: "spec limit higher than the cgroup does not loosen", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: burstablePath, Spec: memSpec(1 << 30)},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources:   append(append([]Source{}, burstableSources...), Source{Kind: KindSpec, Path: "linux.resources", Limits: Limits{MemoryBytes: 1 << 30}}),
				Effective: podLimits,
			},
		},
		{
			name: "spec -1 and empty resources add no source", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: burstablePath, Spec: memSpec(-1)},
			want:  Resolution{PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits},
		},
		{
			name: "spec CPU lower than the pod", version: V2,
			files: systemdV2Tree(false),
			in: ResolveInput{CgroupsPath: burstablePath, Spec: &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
				CPU: &specs.LinuxCPU{Quota: ptr(int64(2500)), Period: ptr(uint64(50000))}}}}},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources:   append(append([]Source{}, burstableSources...), Source{Kind: KindSpec, Path: "linux.resources", Limits: Limits{CPUQuota: 2500, CPUPeriod: 50000}}),
				Effective: Limits{MemoryBytes: mib256, CPUQuota: 2500, CPUPeriod: 50000},
			},
		},
		{
			name: "annotation disagreeing with the cgroup is recorded, not used", version: V2,
			files: systemdV2Tree(false),
			in: ResolveInput{CgroupsPath: burstablePath, UseAnnotation: true, Annotations: map[string]string{
				cri.SandboxMemory:    "209715200",
				cri.SandboxCPUQuota:  "20000",
				cri.SandboxCPUPeriod: "100000",
			}},
			want: Resolution{
				PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits,
				Annotation: &Limits{MemoryBytes: 209715200, CPUQuota: 20000, CPUPeriod: 100000},
			},
			wantWarn: []string{
				cri.SandboxMemory + "=209715200 disagrees with the cgroup memory limit 268435456 of " + burstablePod,
				cri.SandboxCPUQuota + "=20000",
			},
		},
		{
			name: "annotation agreeing gives no warning", version: V2,
			files: systemdV2Tree(false),
			in: ResolveInput{CgroupsPath: burstablePath, Annotations: map[string]string{
				cri.SandboxMemory:    "268435456",
				cri.SandboxCPUQuota:  "5000",
				cri.SandboxCPUPeriod: "50000",
			}},
			want: Resolution{
				PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits,
				Annotation: &Limits{MemoryBytes: mib256, CPUQuota: 5000, CPUPeriod: 50000},
			},
		},
		{
			name: "besteffort pod with annotation, not opted in", version: V2,
			files: systemdV2Tree(false),
			in:    ResolveInput{CgroupsPath: besteffortPath, Annotations: map[string]string{cri.SandboxMemory: "268435456"}},
			want: Resolution{
				PodCgroup: besteffortPod,
				Sources: []Source{
					cgroupSrc(besteffortPod, Limits{}), cgroupSrc(besteffort, Limits{}),
					cgroupSrc(kubepods, Limits{}), cgroupSrc("/", Limits{}),
				},
				Effective:  Limits{},
				Annotation: &Limits{MemoryBytes: mib256},
			},
			wantWarn: []string{"no cgroup on " + besteffortPod + "/cri-containerd-" + sandbox + ".scope limits memory"},
		},
		{
			name: "cgroupsPerQOS=false: annotation used when opted in", version: V2,
			files: map[string]string{"cgroup.controllers": "", "ctr/": ""},
			in: ResolveInput{CgroupsPath: "/ctr/" + sandbox, UseAnnotation: true, Spec: memSpec(1 << 30), Annotations: map[string]string{
				cri.SandboxMemory:    "268435456",
				cri.SandboxCPUQuota:  "50000",
				cri.SandboxCPUPeriod: "100000",
			}},
			want: Resolution{
				PodCgroup: "/ctr",
				Sources: []Source{
					cgroupSrc("/ctr", Limits{}), cgroupSrc("/", Limits{}),
					{Kind: KindSpec, Path: "linux.resources", Limits: Limits{MemoryBytes: 1 << 30}},
					{Kind: KindAnnotation, Path: annotationSourcePath, Limits: Limits{MemoryBytes: mib256, CPUQuota: 50000, CPUPeriod: 100000}},
				},
				Effective:  Limits{MemoryBytes: mib256, CPUQuota: 50000, CPUPeriod: 100000},
				Annotation: &Limits{MemoryBytes: mib256, CPUQuota: 50000, CPUPeriod: 100000},
			},
		},
		{
			name: "annotation never loosens the spec", version: V2,
			files: map[string]string{"cgroup.controllers": ""},
			in: ResolveInput{CgroupsPath: "/ctr/" + sandbox, UseAnnotation: true, Spec: memSpec(1 << 20),
				Annotations: map[string]string{cri.SandboxMemory: "268435456"}},
			want: Resolution{
				PodCgroup: "/ctr",
				Sources: []Source{
					cgroupSrc("/", Limits{}),
					{Kind: KindSpec, Path: "linux.resources", Limits: Limits{MemoryBytes: 1 << 20}},
					{Kind: KindAnnotation, Path: annotationSourcePath, Limits: Limits{MemoryBytes: mib256}},
				},
				Effective:  Limits{MemoryBytes: 1 << 20},
				Annotation: &Limits{MemoryBytes: mib256},
			},
		},
		{
			name: "junk annotations are warnings, never errors", version: V2,
			files: systemdV2Tree(false),
			in: ResolveInput{CgroupsPath: burstablePath, UseAnnotation: true, Annotations: map[string]string{
				cri.SandboxMemory:    "256Mi",
				cri.SandboxCPUQuota:  "lots",
				cri.SandboxCPUPeriod: "-100000",
			}},
			want: Resolution{PodCgroup: burstablePod, Sources: burstableSources, Effective: podLimits},
			wantWarn: []string{
				cri.SandboxMemory + `="256Mi" ignored`,
				cri.SandboxCPUQuota + `="lots" ignored`,
				cri.SandboxCPUPeriod + `="-100000" ignored`,
			},
		},
		{
			name: "negative and huge memory annotations", version: V2,
			files: map[string]string{"cgroup.controllers": ""},
			in: ResolveInput{CgroupsPath: "/a/b", UseAnnotation: true, Annotations: map[string]string{
				cri.SandboxMemory: "-5", cri.SandboxCPUQuota: "-1",
			}},
			want:     Resolution{PodCgroup: "/a", Sources: []Source{cgroupSrc("/", Limits{})}},
			wantWarn: []string{cri.SandboxMemory + `="-5" ignored: negative`},
		},
		{
			name: "v2 cgroupfs burstable", version: V2,
			files: merge(
				map[string]string{"cgroup.controllers": ""},
				v2Cgroup("kubepods", "max", "max 100000"),
				v2Cgroup("kubepods/burstable", "max", "max 100000"),
				v2Cgroup("kubepods/burstable/"+podUIDfs, "268435456", "10000 100000"),
			),
			in: ResolveInput{CgroupsPath: "/kubepods/burstable/" + podUIDfs + "/" + sandbox},
			want: Resolution{
				PodCgroup: "/kubepods/burstable/" + podUIDfs,
				Sources: []Source{
					cgroupSrc("/kubepods/burstable/"+podUIDfs, podLimits),
					cgroupSrc("/kubepods/burstable", Limits{}),
					cgroupSrc("/kubepods", Limits{}),
					cgroupSrc("/", Limits{}),
				},
				Effective: podLimits,
			},
		},
		{
			name: "v1 cgroupfs burstable", version: V1,
			files: map[string]string{
				"memory/memory.limit_in_bytes":                                      v1Unlimited + "\n",
				"memory/kubepods/memory.limit_in_bytes":                             v1Unlimited + "\n",
				"memory/kubepods/burstable/memory.limit_in_bytes":                   v1Unlimited + "\n",
				"memory/kubepods/burstable/" + podUIDfs + "/memory.limit_in_bytes":  "268435456\n",
				"cpu,cpuacct/cpu.cfs_quota_us":                                      "-1\n",
				"cpu,cpuacct/kubepods/cpu.cfs_quota_us":                             "-1\n",
				"cpu,cpuacct/kubepods/burstable/" + podUIDfs + "/cpu.cfs_quota_us":  "10000\n",
				"cpu,cpuacct/kubepods/burstable/" + podUIDfs + "/cpu.cfs_period_us": "100000\n",
			},
			in: ResolveInput{CgroupsPath: "/kubepods/burstable/" + podUIDfs + "/" + sandbox},
			want: Resolution{
				PodCgroup: "/kubepods/burstable/" + podUIDfs,
				Sources: []Source{
					cgroupSrc("/kubepods/burstable/"+podUIDfs, podLimits),
					cgroupSrc("/kubepods/burstable", Limits{}),
					cgroupSrc("/kubepods", Limits{}),
					cgroupSrc("/", Limits{}),
				},
				Effective: podLimits,
			},
		},
		{
			name: "v1 systemd burstable", version: V1,
			files: map[string]string{
				"memory" + burstablePod + "/memory.limit_in_bytes":  "268435456\n",
				"memory" + burstable + "/memory.limit_in_bytes":     v1Unlimited + "\n",
				"cpu,cpuacct" + burstablePod + "/cpu.cfs_quota_us":  "-1\n",
				"cpu,cpuacct" + burstablePod + "/cpu.cfs_period_us": "100000\n",
			},
			in: ResolveInput{CgroupsPath: burstablePath},
			want: Resolution{
				PodCgroup: burstablePod,
				Sources: []Source{
					cgroupSrc(burstablePod, Limits{MemoryBytes: mib256}),
					cgroupSrc(burstable, Limits{}),
					cgroupSrc(kubepods, Limits{}),
					cgroupSrc("/", Limits{}),
				},
				Effective: Limits{MemoryBytes: mib256},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			h := Hierarchy{Root: root, Version: tt.version}
			got, err := Resolve(h, tt.in)
			if err != nil {
				t.Fatalf("Resolve(%q) error = %v", tt.in.CgroupsPath, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.FilterPath(func(p cmp.Path) bool {
				s := p.String()
				return s == "Path" || s == "Warnings"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("Resolve(%q) mismatch (-want +got):\n%s", tt.in.CgroupsPath, diff)
			}
			if len(got.Warnings) != len(tt.wantWarn) {
				t.Fatalf("Resolve(%q).Warnings = %q, want %d matching %q", tt.in.CgroupsPath, got.Warnings, len(tt.wantWarn), tt.wantWarn)
			}
			for _, w := range tt.wantWarn {
				found := false
				for _, g := range got.Warnings {
					found = found || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("Resolve(%q).Warnings = %q, want one containing %q", tt.in.CgroupsPath, got.Warnings, w)
				}
			}
			for _, s := range got.Sources {
				if strings.HasPrefix(s.Path, "/system.slice") {
					t.Errorf("Resolve(%q) read %s, which is not on the pod's path", tt.in.CgroupsPath, s.Path)
				}
			}
			checkNeverLoosens(t, got)
		})
	}
}

// TestResolveMisplacedSandbox reproduces the seed: the sandbox of a
// burstable pod sits in system.slice/<slice>:cri-containerd:<id>. Reading
// that cgroup (what old runsc does) sees no limit; Resolve, which reads
// the path kubelet meant, sees the pod's.
func TestResolveMisplacedSandbox(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, systemdV2Tree(false))
	h := Hierarchy{Root: root, Version: V2}

	wrong, err := h.ReadLimits(misplaced)
	if err != nil {
		t.Fatal(err)
	}
	if wrong.MemoryLimited() {
		t.Fatalf("fake tree: misplaced cgroup %s has limit %d, want max", misplaced, wrong.MemoryBytes)
	}
	res, err := Resolve(h, ResolveInput{CgroupsPath: burstablePath})
	if err != nil {
		t.Fatal(err)
	}
	if res.Effective.MemoryBytes != mib256 {
		t.Errorf("Resolve(%q).Effective.MemoryBytes = %d, want %d", burstablePath, res.Effective.MemoryBytes, mib256)
	}
	if Within(res.PodCgroup, misplaced) {
		t.Errorf("Within(%q, %q) = true, want false", res.PodCgroup, misplaced)
	}
	if !Within(res.PodCgroup, res.Path.Dir) {
		t.Errorf("Within(%q, %q) = false, want true", res.PodCgroup, res.Path.Dir)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		path  string
		err   error
	}{
		{"empty path", systemdV2Tree(false), "", ErrEmptyPath},
		{"dotdot", systemdV2Tree(false), "/kubepods/../../../etc", ErrPathEscape},
		{"malformed slice", systemdV2Tree(false), "kubepods--burstable.slice:cri-containerd:x", ErrInvalidSlice},
		{"garbage on the pod slice", merge(systemdV2Tree(false), v2Cgroup(burstablePod[1:], "lots", "max 100000")), burstablePath, strconv.ErrSyntax},
		{"negative on an ancestor", merge(systemdV2Tree(false), v2Cgroup(kubepods[1:], "-1", "max 100000")), burstablePath, ErrNegative},
		{"overflow on the leaf", merge(systemdV2Tree(true), v2Cgroup(burstableLeaf[1:], "99999999999999999999", "max 100000")), burstablePath, strconv.ErrRange},
		{"garbage cpu", merge(systemdV2Tree(false), v2Cgroup(burstablePod[1:], "max", "1 2 3")), burstablePath, strconv.ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			got, err := Resolve(Hierarchy{Root: root, Version: V2}, ResolveInput{CgroupsPath: tt.path})
			if !errors.Is(err, tt.err) {
				t.Errorf("Resolve(%q) = %+v, %v, want error %v", tt.path, got.Effective, err, tt.err)
			}
		})
	}

	t.Run("symlink out of the root on the path", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		writeTree(t, base, merge(
			map[string]string{"root/cgroup.controllers": ""},
			v2Cgroup("outside/kubepods-burstable.slice", "max", "max 100000"),
		))
		// kubepods.slice -> ../outside: the pod slice's parents would be
		// read from outside the root.
		if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "kubepods.slice")); err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(Hierarchy{Root: root, Version: V2}, ResolveInput{CgroupsPath: burstablePath})
		if !errors.Is(err, ErrPathEscape) {
			t.Errorf("Resolve(%q) = %+v, %v, want error %v", burstablePath, got, err, ErrPathEscape)
		}
	})

	t.Run("symlink out of the root and back in", func(t *testing.T) {
		// kubepods.slice -> outside, outside/kubepods-burstable.slice ->
		// back into the root: the leaf resolves inside the root, but
		// kubepods.slice itself, an ancestor, does not.
		base := t.TempDir()
		root := filepath.Join(base, "root")
		writeTree(t, base, merge(
			map[string]string{"root/cgroup.controllers": ""},
			v2Cgroup("root/back/kubepods-burstable-"+podUID+".slice", "268435456", "max 100000"),
			v2Cgroup("outside", "max", "max 100000"),
		))
		if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "kubepods.slice")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, "back"), filepath.Join(base, "outside", "kubepods-burstable.slice")); err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(Hierarchy{Root: root, Version: V2}, ResolveInput{CgroupsPath: burstablePath})
		if !errors.Is(err, ErrPathEscape) {
			t.Errorf("Resolve(%q) = %+v, %v, want error %v", burstablePath, got, err, ErrPathEscape)
		}
	})
}

// TestResolveHostileFiles: a limit file that is a FIFO, a symlink or huge
// fails Resolve at once with a clear error, never hangs it.
func TestResolveHostileFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(path string) error
		err  error
	}{
		{"FIFO memory.max", func(p string) error { return syscall.Mkfifo(p, 0o600) }, safefile.ErrNotRegular},
		{"symlinked memory.max", func(p string) error { return os.Symlink("/proc/self/status", p) }, safefile.ErrEscape},
		{"huge memory.max", func(p string) error { return os.WriteFile(p, make([]byte, 1<<20), 0o644) }, errTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, systemdV2Tree(false))
			p := filepath.Join(root, burstablePod[1:], "memory.max")
			os.Remove(p)
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := Resolve(Hierarchy{Root: root, Version: V2}, ResolveInput{CgroupsPath: burstablePath})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), "memory.max") {
					t.Errorf("Resolve: %v, want %v naming memory.max", err, tc.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Resolve hung")
			}
		})
	}
}

// TestResolveV1ControllerLinks: v1 controller directories linked inside
// the root (cpu -> cpu,cpuacct) work; one linked out of the root is
// refused, not read.
func TestResolveV1ControllerLinks(t *testing.T) {
	files := map[string]string{
		"memory" + burstablePod + "/memory.limit_in_bytes":  "268435456\n",
		"cpu,cpuacct" + burstablePod + "/cpu.cfs_quota_us":  "50000\n",
		"cpu,cpuacct" + burstablePod + "/cpu.cfs_period_us": "100000\n",
	}
	t.Run("cpu -> cpu,cpuacct inside the root", func(t *testing.T) {
		root := t.TempDir()
		writeTree(t, root, files)
		if err := os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")); err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(Hierarchy{Root: root, Version: V1}, ResolveInput{CgroupsPath: burstablePath})
		if err != nil || got.Effective.MemoryBytes != mib256 || got.Effective.CPUQuota != 50000 {
			t.Errorf("Resolve = %+v, %v; want 256Mi and quota 50000", got.Effective, err)
		}
	})
	t.Run("memory -> outside the root", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		writeTree(t, root, map[string]string{"cpu,cpuacct/": ""})
		// A looser limit outside: following the link would read it.
		writeTree(t, base, map[string]string{"outside" + burstablePod + "/memory.limit_in_bytes": "1073741824\n"})
		if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "memory")); err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(Hierarchy{Root: root, Version: V1}, ResolveInput{CgroupsPath: burstablePath})
		if !errors.Is(err, ErrPathEscape) {
			t.Errorf("Resolve = %+v, %v; want ErrPathEscape", got.Effective, err)
		}
	})
}

func TestResolvePodCgroupExists(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, systemdV2Tree(false))
	h := Hierarchy{Root: root, Version: V2}
	if res, err := Resolve(h, ResolveInput{CgroupsPath: burstablePath}); err != nil || !res.PodCgroupExists() {
		t.Errorf("pod slice present: PodCgroupExists = false (%v)", err)
	}
	if err := os.RemoveAll(filepath.Join(root, burstablePod[1:])); err != nil {
		t.Fatal(err)
	}
	if res, err := Resolve(h, ResolveInput{CgroupsPath: burstablePath}); err != nil || res.PodCgroupExists() {
		t.Errorf("pod slice gone: PodCgroupExists = true (%v)", err)
	}
}
