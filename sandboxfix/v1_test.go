package sandboxfix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/coreos/go-systemd/v22/dbus"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
)

// newFakeHostV1 is a cgroup v1 node: memory, cpu,cpuacct (with the usual
// cpu link) and pids hierarchies, the pod slice's limit in
// memory.limit_in_bytes.
func newFakeHostV1(t *testing.T, podLimit string) *fakeHost {
	h := &fakeHost{t: t, cgroups: t.TempDir(), proc: t.TempDir(), props: map[string][]dbus.Property{}, release: 20221219, v1: true}
	const unlimited = "9223372036854771712\n"
	for _, d := range []string{"", "/kubepods.slice", "/kubepods.slice/kubepods-burstable.slice", "/system.slice"} {
		h.write(h.cgroups, "memory"+d+"/memory.limit_in_bytes", unlimited)
		h.write(h.cgroups, "cpu,cpuacct"+d+"/cpu.cfs_quota_us", "-1\n")
		h.write(h.cgroups, "pids"+d+"/pids.max", "max\n")
	}
	h.write(h.cgroups, "memory"+podSlice+"/memory.limit_in_bytes", podLimit+"\n")
	h.write(h.cgroups, "cpu,cpuacct"+podSlice+"/cpu.cfs_quota_us", "-1\n")
	if err := os.Symlink("cpu,cpuacct", filepath.Join(h.cgroups, "cpu")); err != nil {
		t.Fatal(err)
	}
	return h
}

// fakeHolder is a scope holder that records its release.
type fakeHolder struct {
	pid      int
	released int
}

func (f *fakeHolder) PID() int       { return f.pid }
func (f *fakeHolder) Release() error { f.released++; return nil }

const holderPID = 4100

// v1Fix is the fix on a v1 host with a fake holder.
func v1Fix(h *fakeHost, policy config.Policy) (*SandboxFix, *fakeHolder) {
	fix := h.fixFor(policy, true)
	holder := &fakeHolder{pid: holderPID}
	fix.Hold = func() (Holder, error) { return holder, nil }
	return fix, holder
}

// runscV1 plays runsc's cgroup v1 manager at create: an absolute
// cgroupsPath is the sandbox's cgroup in every hierarchy; anything else
// is a directory below runsc's own cgroup, containerd.service
// (runsc/cgroup/cgroup.go new()).
func (h *fakeHost) runscV1(t *testing.T, bundle string, total uint64) {
	spec, err := ocispec.Read(bundle)
	if err != nil {
		t.Fatal(err)
	}
	cg := spec.Linux.CgroupsPath
	if !strings.HasPrefix(cg, "/") {
		cg = "/system.slice/containerd.service/" + cg
	}
	h.runsc(bundle, cg, total)
}

func createV1(t *testing.T, h *fakeHost, fix *SandboxFix, options string) (*testBed, string, error) {
	t.Helper()
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, systemdPath, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.runscV1(t, b, limit256) }
	opts, _ := optionsAny(t, tb.dir, options)
	_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts})
	return tb, b, err
}

// TestV1PrepareScope: on cgroup v1 runsc gets an absolute cgroupsPath in a
// delegated scope the guard started under the pod slice, so it places the
// sandbox there itself and nothing moves. An operator's systemd-cgroup
// (which would make a 2026 runsc refuse that path) is off for it.
func TestV1PrepareScope(t *testing.T) {
	h := newFakeHostV1(t, "268435456")
	h.write(h.cgroups, "unified/cgroup.procs", "") // hybrid, as Debian 12 boots v1
	fix, holder := v1Fix(h, config.PolicyEnforce)
	var heldAtCreate bool
	tb, b, err := func() (*testBed, string, error) {
		tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
		b := sandboxBundle(t, tb, sandboxID, systemdPath, 0)
		tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) {
			heldAtCreate = holder.released == 0
			h.runscV1(t, b, limit256)
		}
		opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  systemd-cgroup = \"true\"\n")
		_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts})
		return tb, b, err
	}()
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	unit := "runsc-guard-" + sandboxID + ".scope"
	if diff := cmp.Diff([]string{unit}, h.units); diff != "" {
		t.Fatalf("systemd units (-want +got):\n%s", diff)
	}
	props := map[string]any{}
	for _, p := range h.props[unit] {
		props[p.Name] = p.Value.Value()
	}
	want := map[string]any{"Slice": "kubepods-burstable-podU1.slice", "PIDs": []uint32{holderPID}, "Delegate": true, "MemoryMax": uint64(limit256)}
	for k, v := range want {
		if diff := cmp.Diff(v, props[k]); diff != "" {
			t.Errorf("scope property %s (-want +got):\n%s", k, diff)
		}
	}
	if !heldAtCreate || holder.released != 1 {
		t.Errorf("holder held during runsc's Create: %v, released %d times after it, want once", heldAtCreate, holder.released)
	}
	spec, err := ocispec.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := podSlice + "/" + unit; spec.Linux.CgroupsPath != want {
		t.Errorf("runsc's cgroupsPath = %q, want %q", spec.Linux.CgroupsPath, want)
	}
	got := tb.fakes["d1"].last().req.(*taskAPI.CreateTaskRequest)
	var o runtimeoptions.Options
	if err := proto.Unmarshal(got.Options.Value, &o); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(o.ConfigPath)
	if !strings.Contains(string(body), "systemd-cgroup = 'false'") {
		t.Errorf("runsc options keep systemd-cgroup on:\n%s", body)
	}
	// systemd tracks a unit's processes in the hybrid node's v2
	// hierarchy: every process runsc started is the scope's there too.
	procs, _ := os.ReadFile(filepath.Join(h.cgroups, "unified", podSlice, unit, "cgroup.procs"))
	for _, pid := range []int{sandboxPID, goferPID, helperPID} {
		if !strings.Contains(string(procs), fmt.Sprintf("%d\n", pid)) {
			t.Errorf("pid %d not in the scope's unified cgroup.procs %q", pid, procs)
		}
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit", "scope", "runsc-flag"}, r.Actions); diff != "" {
		t.Errorf("record actions (-want +got):\n%s", diff)
	}
	if r.CgroupsPath != systemdPath || r.RunscCgroupsPath != podSlice+"/"+unit || r.Outcome != "ok" || len(r.PlacementAfter) != 0 {
		t.Errorf("record = %+v", r)
	}
	for _, p := range r.PlacementBefore {
		if !p.InPod(podSlice) || p.Controllers["pids"] != podSlice+"/"+unit {
			t.Errorf("%s[%d] placed in %s %v", p.Argv0, p.PID, p.Cgroup, p.Controllers)
		}
	}
}

// TestV1NoPreventionWithoutOptions: options of a type the guard does not
// edit might turn systemd-cgroup on, which with an absolute path makes a
// 2026 runsc fail: the path stays, runsc misplaces, the move catches it.
func TestV1NoPreventionWithoutOptions(t *testing.T) {
	h := newFakeHostV1(t, "268435456")
	fix, holder := v1Fix(h, config.PolicyEnforce)
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, systemdPath, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.runscV1(t, b, limit256) }
	req := &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b}
	req.Options, _ = optionsAny(t, tb.dir, "")
	req.Options.TypeUrl = "example.com/other.Options"
	if _, err := tb.guard.Create(context.Background(), req); err != nil {
		t.Fatalf("Create: %v", err)
	}
	r := readRecord(t, b)
	if holder.released != 0 || r.RunscCgroupsPath != "" {
		t.Errorf("prepared a scope for options it cannot edit: holder released %d, runsc path %q", holder.released, r.RunscCgroupsPath)
	}
	if diff := cmp.Diff([]string{"runsc-guard-" + sandboxID + ".scope"}, h.units); diff != "" {
		t.Errorf("units (-want +got):\n%s", diff)
	}
	if !strings.Contains(strings.Join(r.Actions, ","), "move") || r.Outcome != "ok" {
		t.Errorf("record = %+v, want a move", r)
	}
}

// TestV1OneHierarchyOutside: a sandbox in the pod's memory cgroup but in
// containerd's pids cgroup is outside the pod (pids.max does not hold it):
// it is moved, into a scope of another name than the held one.
func TestV1OneHierarchyOutside(t *testing.T) {
	h := newFakeHostV1(t, "268435456")
	fix, _ := v1Fix(h, config.PolicyEnforce)
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, systemdPath, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) {
		h.runscV1(t, b, limit256)
		in := podSlice + "/runsc-guard-" + sandboxID + ".scope"
		h.write(h.proc, fmt.Sprintf("%d/cgroup", sandboxPID), "12:memory:"+in+"\n11:cpu,cpuacct:"+in+"\n10:pids:/system.slice/containerd.service\n")
	}
	opts, _ := optionsAny(t, tb.dir, "")
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := []string{"runsc-guard-" + sandboxID + ".scope", "runsc-guard-" + sandboxID + "-moved.scope"}
	if diff := cmp.Diff(want, h.units); diff != "" {
		t.Errorf("units (-want +got):\n%s", diff)
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit", "scope", "move"}, r.Actions); diff != "" {
		t.Errorf("record actions (-want +got):\n%s", diff)
	}
	for _, p := range r.PlacementAfter {
		if !p.InPod(podSlice) {
			t.Errorf("after the move %s[%d] is outside: %s %v", p.Argv0, p.PID, p.Cgroup, p.Controllers)
		}
	}
}

// TestV1HolderReleased: the holder goes whatever happens after the scope
// started: the runsc shim's Create fails, or systemd refuses the scope.
func TestV1HolderReleased(t *testing.T) {
	t.Run("create fails", func(t *testing.T) {
		h := newFakeHostV1(t, "268435456")
		fix, holder := v1Fix(h, config.PolicyEnforce)
		tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
		b := sandboxBundle(t, tb, sandboxID, systemdPath, 0)
		tb.fakes["d1"].createErr = errors.New("runsc create: boom")
		opts, _ := optionsAny(t, tb.dir, "")
		if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err == nil {
			t.Fatal("Create succeeded")
		}
		if holder.released != 1 {
			t.Errorf("holder released %d times, want 1", holder.released)
		}
	})
	t.Run("scope refused", func(t *testing.T) {
		h := newFakeHostV1(t, "268435456")
		h.failMove = true
		fix, holder := v1Fix(h, config.PolicyEnforce)
		_, b, err := createV1(t, h, fix, "")
		if !errors.Is(err, ErrLimitNotEffective) {
			t.Fatalf("Create: %v, want ErrLimitNotEffective", err)
		}
		if holder.released != 1 {
			t.Errorf("holder released %d times, want 1", holder.released)
		}
		spec, _ := ocispec.Read(b)
		if spec.Linux.CgroupsPath != systemdPath {
			t.Errorf("cgroupsPath rewritten to %q although the scope failed", spec.Linux.CgroupsPath)
		}
		if r := readRecord(t, b); r.Outcome != "refused" || !strings.Contains(r.Error, "runsc-guard-"+sandboxID+".scope") {
			t.Errorf("record = %+v", r)
		}
	})
}

// TestV1Cgroupfs: an absolute cgroupfs path is where runsc's v1 manager
// puts the sandbox already: no scope, and the spec limit sizes it.
func TestV1Cgroupfs(t *testing.T) {
	h := newFakeHostV1(t, "268435456")
	const pod = "/kubepods/burstable/podU1"
	h.write(h.cgroups, "memory"+pod+"/memory.limit_in_bytes", "268435456\n")
	fix, holder := v1Fix(h, config.PolicyEnforce)
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, pod+"/"+sandboxID, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.runscV1(t, b, limit256) }
	opts, _ := optionsAny(t, tb.dir, "")
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit"}, r.Actions); diff != "" {
		t.Errorf("record actions (-want +got):\n%s", diff)
	}
	if len(h.units) != 0 || holder.released != 0 || r.PodCgroup != pod {
		t.Errorf("units %v, holder %d, record %+v", h.units, holder.released, r)
	}
}

// TestV1CPUUnpinned: on cgroup v1 (cgroupfs driver) runsc applies the
// spec's CPU quota, the pod's, to the sandbox's cgroup. v1 refuses a
// parent a quota below a child's, so kubelet could never cut the pod's
// CPU again: once the sandbox booted, the guard lifts that quota, and a
// Follow after a resize never writes a finite one below the pod.
func TestV1CPUUnpinned(t *testing.T) {
	h := newFakeHostV1(t, "268435456")
	const pod = "/kubepods/burstable/podU1"
	leaf := pod + "/" + sandboxID
	h.write(h.cgroups, "memory"+pod+"/memory.limit_in_bytes", "268435456\n")
	h.write(h.cgroups, "cpu,cpuacct"+pod+"/cpu.cfs_quota_us", "50000\n")
	h.write(h.cgroups, "cpu,cpuacct"+pod+"/cpu.cfs_period_us", "100000\n")
	fix, _ := v1Fix(h, config.PolicyEnforce)
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, leaf, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) {
		h.runscV1(t, b, limit256)
		// runsc's v1 manager applies the spec the guard wrote.
		h.write(h.cgroups, "memory"+leaf+"/memory.limit_in_bytes", "268435456\n")
		h.write(h.cgroups, "cpu,cpuacct"+leaf+"/cpu.cfs_quota_us", "50000\n")
		h.write(h.cgroups, "cpu,cpuacct"+leaf+"/cpu.cfs_period_us", "100000\n")
	}
	opts, _ := optionsAny(t, tb.dir, "")
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	spec, _ := ocispec.Read(b)
	if spec.Linux.Resources == nil || spec.Linux.Resources.CPU == nil || spec.Linux.Resources.CPU.Quota == nil || *spec.Linux.Resources.CPU.Quota != 50000 {
		t.Fatalf("spec CPU %+v: want the pod's 50000 for runsc to size the sandbox by", spec.Linux.Resources)
	}
	if got := h.read(t, "cpu,cpuacct"+leaf+"/cpu.cfs_quota_us"); got != "-1" {
		t.Errorf("sandbox cgroup cpu.cfs_quota_us = %s after Create, want -1 (the pod's holds it)", got)
	}
	// kubelet raises the pod; the leaf (given a quota again by someone)
	// goes back to unlimited, not to the pod's.
	h.write(h.cgroups, "cpu,cpuacct"+pod+"/cpu.cfs_quota_us", "100000\n")
	h.write(h.cgroups, "cpu,cpuacct"+leaf+"/cpu.cfs_quota_us", "50000\n")
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	if got := h.read(t, "cpu,cpuacct"+leaf+"/cpu.cfs_quota_us"); got != "-1" {
		t.Errorf("sandbox cgroup cpu.cfs_quota_us = %s after the raise, want -1", got)
	}
	if got := h.read(t, "memory"+leaf+"/memory.limit_in_bytes"); got != "268435456" {
		t.Errorf("sandbox memory.limit_in_bytes = %s, want the unchanged pod's", got)
	}
	r := readRecord(t, b)
	if len(r.Follows) != 1 || r.Follows[0].To.CPUQuota != 100000 || !cmp.Equal([]string{leaf + " cpu file"}, r.Follows[0].Written) {
		t.Errorf("follows = %+v", r.Follows)
	}
}
