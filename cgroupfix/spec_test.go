package cgroupfix

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestApplyLimits(t *testing.T) {
	res := func(mem *int64, quota *int64, period *uint64) *specs.Spec {
		r := &specs.LinuxResources{}
		if mem != nil {
			r.Memory = &specs.LinuxMemory{Limit: mem}
		}
		if quota != nil || period != nil {
			r.CPU = &specs.LinuxCPU{Quota: quota, Period: period}
		}
		return &specs.Spec{Linux: &specs.Linux{Resources: r}}
	}
	tests := []struct {
		name        string
		spec        *specs.Spec
		eff         Limits
		want        *specs.Spec
		wantChanged bool
	}{
		{
			name: "nil spec", spec: nil, eff: Limits{MemoryBytes: mib256},
			want: nil, wantChanged: false,
		},
		{
			name: "no linux section gets one", spec: &specs.Spec{}, eff: Limits{MemoryBytes: mib256},
			want: res(ptr(int64(mib256)), nil, nil), wantChanged: true,
		},
		{
			name: "unlimited spec gets the limit", spec: res(ptr(int64(-1)), nil, nil), eff: Limits{MemoryBytes: mib256},
			want: res(ptr(int64(mib256)), nil, nil), wantChanged: true,
		},
		{
			name: "higher spec is lowered", spec: res(ptr(int64(1<<30)), nil, nil), eff: Limits{MemoryBytes: mib256},
			want: res(ptr(int64(mib256)), nil, nil), wantChanged: true,
		},
		{
			name: "lower spec is never raised", spec: res(ptr(int64(1<<20)), nil, nil), eff: Limits{MemoryBytes: mib256},
			want: res(ptr(int64(1<<20)), nil, nil), wantChanged: false,
		},
		{
			name: "equal spec unchanged", spec: res(ptr(int64(mib256)), nil, nil), eff: Limits{MemoryBytes: mib256},
			want: res(ptr(int64(mib256)), nil, nil), wantChanged: false,
		},
		{
			name: "unlimited effective changes nothing", spec: res(ptr(int64(1<<30)), nil, nil), eff: Limits{},
			want: res(ptr(int64(1<<30)), nil, nil), wantChanged: false,
		},
		{
			name: "cpu set when absent", spec: res(nil, nil, nil), eff: Limits{CPUQuota: 10000, CPUPeriod: 100000},
			want: res(nil, ptr(int64(10000)), ptr(uint64(100000))), wantChanged: true,
		},
		{
			name: "cpu default period filled in", spec: res(nil, nil, nil), eff: Limits{CPUQuota: 10000},
			want: res(nil, ptr(int64(10000)), ptr(uint64(DefaultCPUPeriod))), wantChanged: true,
		},
		{
			name: "cpu higher ratio lowered", spec: res(nil, ptr(int64(200000)), ptr(uint64(100000))), eff: Limits{CPUQuota: 5000, CPUPeriod: 50000},
			want: res(nil, ptr(int64(5000)), ptr(uint64(50000))), wantChanged: true,
		},
		{
			name: "cpu same ratio, other period: unchanged", spec: res(nil, ptr(int64(10000)), ptr(uint64(100000))), eff: Limits{CPUQuota: 5000, CPUPeriod: 50000},
			want: res(nil, ptr(int64(10000)), ptr(uint64(100000))), wantChanged: false,
		},
		{
			name: "cpu lower ratio never raised, memory still lowered",
			spec: res(ptr(int64(1<<30)), ptr(int64(1000)), ptr(uint64(100000))), eff: Limits{MemoryBytes: mib256, CPUQuota: 50000, CPUPeriod: 100000},
			want: res(ptr(int64(mib256)), ptr(int64(1000)), ptr(uint64(100000))), wantChanged: true,
		},
		{
			name: "cpu quota -1 in spec is unlimited", spec: res(nil, ptr(int64(-1)), nil), eff: Limits{CPUQuota: 10000, CPUPeriod: 100000},
			want: res(nil, ptr(int64(10000)), ptr(uint64(100000))), wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := ApplyLimits(tt.spec, tt.eff)
			if changed != tt.wantChanged {
				t.Errorf("ApplyLimits(%+v) changed = %v, want %v", tt.eff, changed, tt.wantChanged)
			}
			if diff := cmp.Diff(tt.want, tt.spec); diff != "" {
				t.Errorf("ApplyLimits(%+v) spec mismatch (-want +got):\n%s", tt.eff, diff)
			}
			if again := ApplyLimits(tt.spec, tt.eff); again {
				t.Errorf("second ApplyLimits(%+v) = true, want false (idempotent)", tt.eff)
			}
			// After applying, the spec never allows more than eff.
			if tt.spec != nil {
				sl, _ := specLimits(tt.spec)
				if tt.eff.MemoryLimited() && (!sl.MemoryLimited() || sl.MemoryBytes > tt.eff.MemoryBytes) {
					t.Errorf("after ApplyLimits(%+v), spec memory = %d", tt.eff, sl.MemoryBytes)
				}
				if cpuLess(tt.eff, sl) {
					t.Errorf("after ApplyLimits(%+v), spec cpu = %+v", tt.eff, sl)
				}
			}
		})
	}
}

// TestApplyLimitsAfterResolve: the pipeline the shim runs. The spec ends
// with the pod limit and Resolve on the edited spec agrees.
func TestApplyLimitsAfterResolve(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, systemdV2Tree(false))
	h := Hierarchy{Root: root, Version: V2}
	spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: burstablePath}}
	res, err := Resolve(h, ResolveInput{CgroupsPath: spec.Linux.CgroupsPath, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if !ApplyLimits(spec, res.Effective) {
		t.Fatalf("ApplyLimits(%+v) = false, want true", res.Effective)
	}
	if got := *spec.Linux.Resources.Memory.Limit; got != mib256 {
		t.Errorf("spec memory limit = %d, want %d", got, mib256)
	}
	res2, err := Resolve(h, ResolveInput{CgroupsPath: spec.Linux.CgroupsPath, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res.Effective, res2.Effective); diff != "" {
		t.Errorf("Resolve after ApplyLimits changed Effective (-before +after):\n%s", diff)
	}
	if ApplyLimits(spec, res2.Effective) {
		t.Errorf("ApplyLimits on an already-right spec = true, want false")
	}
}
