package cgroupfix

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPodLimits: the minimum over the pod cgroup and its ancestors, never
// the cgroups below it; a missing pod cgroup is an error.
func TestPodLimits(t *testing.T) {
	root := t.TempDir()
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" + podUID + ".slice"
	writeTree(t, root, merge(
		map[string]string{"cgroup.controllers": "memory cpu\n"},
		v2Cgroup("/kubepods.slice", "4294967296", "max 100000"),
		v2Cgroup("/kubepods.slice/kubepods-burstable.slice", "max", "max 100000"),
		v2Cgroup(pod, "536870912", "50000 100000"),
		v2Cgroup(pod+"/cri-containerd-"+sandbox+".scope", "268435456", "20000 100000"),
	))
	h := Hierarchy{Root: root, Version: V2}
	got, err := PodLimits(h, pod)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Limits{MemoryBytes: 536870912, CPUQuota: 50000, CPUPeriod: 100000}); got != want {
		t.Errorf("PodLimits = %+v, want %+v (the scope below must not count)", got, want)
	}
	writeTree(t, root, v2Cgroup(pod, "1099511627776", "max 100000"))
	if got, _ := PodLimits(h, pod); got != (Limits{MemoryBytes: 4294967296}) {
		t.Errorf("PodLimits above node allocatable = %+v, want kubepods.slice's 4Gi", got)
	}
	if _, err := PodLimits(h, pod+"-gone"); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("PodLimits of a missing cgroup: %v, want ErrNoCgroup", err)
	}
}

func TestBelow(t *testing.T) {
	const pod = "/kubepods.slice/p.slice"
	for _, tc := range []struct {
		cg   string
		want []string
	}{
		{pod + "/a.scope/b", []string{pod + "/a.scope/b", pod + "/a.scope"}},
		{pod + "/a.scope", []string{pod + "/a.scope"}},
		{pod, nil},
		{"/system.slice/x", nil},
		{"/kubepods.slice/p.slice-other/x", nil},
	} {
		if got := Below(pod, tc.cg); !cmp.Equal(tc.want, got) {
			t.Errorf("Below(%s) = %q, want %q", tc.cg, got, tc.want)
		}
	}
}

// TestWriteLimits: memory and CPU in v2's and v1's files, unlimited as
// each spells it; a cgroup that does not exist is never made.
func TestWriteLimits(t *testing.T) {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		writeTree(t, root, merge(map[string]string{"cgroup.controllers": "memory cpu\n"}, v2Cgroup("/p/s", "268435456", "50000 100000")))
		h := Hierarchy{Root: root, Version: V2}
		for _, tc := range []struct {
			l            Limits
			memory, cpus string
		}{
			{Limits{MemoryBytes: 536870912, CPUQuota: 200000, CPUPeriod: 100000}, "536870912", "200000 100000"},
			{Limits{}, "max", "max 100000"},
		} {
			if err := h.WriteMemory("/p/s", tc.l.MemoryBytes); err != nil {
				t.Fatal(err)
			}
			if err := h.WriteCPU("/p/s", tc.l); err != nil {
				t.Fatal(err)
			}
			if m, c := read(root+"/p/s/memory.max"), read(root+"/p/s/cpu.max"); m != tc.memory || c != tc.cpus {
				t.Errorf("%+v: memory.max %q cpu.max %q, want %q %q", tc.l, m, c, tc.memory, tc.cpus)
			}
		}
		if err := h.WriteMemory("/p/gone", 1); !errors.Is(err, ErrNoCgroup) {
			t.Errorf("WriteMemory of a missing cgroup: %v, want ErrNoCgroup", err)
		}
		if _, err := os.Stat(root + "/p/gone"); err == nil {
			t.Error("WriteMemory made a cgroup")
		}
	})
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		writeTree(t, root, map[string]string{
			"memory/p/s/memory.limit_in_bytes": "268435456\n",
			"cpu,cpuacct/p/s/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/p/s/cpu.cfs_period_us": "100000\n",
		})
		h := Hierarchy{Root: root, Version: V1}
		if err := h.WriteMemory("/p/s", 0); err != nil {
			t.Fatal(err)
		}
		if err := h.WriteCPU("/p/s", Limits{CPUQuota: 30000, CPUPeriod: 50000}); err != nil {
			t.Fatal(err)
		}
		m, q, p := read(root+"/memory/p/s/memory.limit_in_bytes"), read(root+"/cpu,cpuacct/p/s/cpu.cfs_quota_us"), read(root+"/cpu,cpuacct/p/s/cpu.cfs_period_us")
		if m != "-1" || q != "30000" || p != "50000" {
			t.Errorf("v1 files: limit_in_bytes %q quota %q period %q, want -1 30000 50000", m, q, p)
		}
		if err := h.WriteCPU("/p/s", Limits{}); err != nil || read(root+"/cpu,cpuacct/p/s/cpu.cfs_quota_us") != "-1" {
			t.Errorf("v1 unlimited quota: %v, %q", err, read(root+"/cpu,cpuacct/p/s/cpu.cfs_quota_us"))
		}
	})
}

// TestSetUnitLimits: kubelet's properties, at runtime, infinity when
// unlimited; the CPU quota per second rounded up to systemd's 10 ms.
func TestSetUnitLimits(t *testing.T) {
	f := &fakeSystemd{}
	if err := SetUnitLimits(context.Background(), f, "cri-containerd-x.scope", Limits{MemoryBytes: 512 << 20, CPUQuota: 15001, CPUPeriod: 100000}, true, true); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, p := range f.props {
		got[p.Name] = p.Value.Value().(uint64)
	}
	if want := map[string]uint64{"MemoryMax": 512 << 20, "CPUQuotaPerSecUSec": 160000}; !cmp.Equal(want, got) {
		t.Errorf("properties %v, want %v", got, want)
	}
	if want := []string{"set-properties cri-containerd-x.scope runtime=true"}; !cmp.Equal(want, f.calls) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	props := UnitLimitProperties(Limits{CPUQuota: 25000, CPUPeriod: 50000}, true, true)
	got = map[string]uint64{}
	for _, p := range props {
		got[p.Name] = p.Value.Value().(uint64)
	}
	if want := map[string]uint64{"MemoryMax": math.MaxUint64, "CPUQuotaPerSecUSec": 500000, "CPUQuotaPeriodUSec": 50000}; !cmp.Equal(want, got) {
		t.Errorf("unlimited memory, 50 ms period: %v, want %v", got, want)
	}
	if err := SetUnitLimits(context.Background(), f, "../x.scope", Limits{}, true, false); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("SetUnitLimits of a bad unit name: %v", err)
	}
	if UnitOf("/a.slice/b.scope") != "b.scope" || UnitOf("/a.slice/b.scope/sub") != "" || UnitOf(filepath.Join("/a", "kubepods.slice")) != "kubepods.slice" {
		t.Error("UnitOf")
	}
}
