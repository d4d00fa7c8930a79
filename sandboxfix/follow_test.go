package sandboxfix

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/config"
)

// The sandbox scope runsc makes with systemd-cgroup on, where Debian's
// runsc applies the spec's limit the guard wrote.
const runscScope = podSlice + "/cri-containerd-" + sandboxID + ".scope"

// followBed is a sandbox created behind the guard by a runsc that put it
// in cg, which holds cgMemory (and cgCPU, "" for none) as runsc applied
// the spec; it returns the test bed and the sandbox's bundle.
func followBed(t *testing.T, h *fakeHost, cg, cgMemory, cgCPU string) (*testBed, string) {
	t.Helper()
	fix := h.fixFor(config.PolicyEnforce, true)
	tb, b := setup(t, h, fix, 0, cg, limit256)
	onCreate := tb.fakes["d1"].onCreate
	tb.fakes["d1"].onCreate = func(req *taskAPI.CreateTaskRequest) {
		onCreate(req)
		h.write(h.cgroups, cg+"/memory.max", cgMemory+"\n")
		if cgCPU != "" {
			h.write(h.cgroups, cg+"/cpu.max", cgCPU+"\n")
		}
	}
	opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  network = \"none\"\n")
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return tb, b
}

func (h *fakeHost) read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.cgroups, p))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestFollowMemory: kubelet resizes the pod slice; each Follow gives the
// sandbox's scope the pod's new limit, raised or lowered, through systemd,
// and records the resize with the --total-memory the sandbox keeps.
func TestFollowMemory(t *testing.T) {
	h := newFakeHost(t, "268435456")
	_, b := followBed(t, h, runscScope, "268435456", "")
	steps := []struct {
		name        string
		pod         string // the pod slice's memory.max
		kubepods    string // kubepods.slice's (node allocatable)
		wantScope   string
		wantCurrent uint64
	}{
		{"raise", "536870912", "max", "536870912", 536870912},
		{"lower", "134217728", "max", "134217728", 134217728},
		{"raise above the node", "1099511627776", "4294967296", "4294967296", 4294967296},
		{"raise above the node, no allocatable", "1099511627776", "max", "1099511627776", 1099511627776},
		{"limit gone", "max", "max", "max", 0},
	}
	for i, st := range steps {
		h.write(h.cgroups, podSlice+"/memory.max", st.pod+"\n")
		h.write(h.cgroups, "/kubepods.slice/memory.max", st.kubepods+"\n")
		h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
		if got := h.read(t, runscScope+"/memory.max"); got != st.wantScope {
			t.Errorf("%s: scope memory.max = %s, want %s", st.name, got, st.wantScope)
		}
		r := readRecord(t, b)
		if r.Current == nil || r.Current.MemoryBytes != st.wantCurrent || len(r.Follows) != i+1 {
			t.Fatalf("%s: record current %+v follows %d, want %d and %d", st.name, r.Current, len(r.Follows), st.wantCurrent, i+1)
		}
		f := r.Follows[i]
		if f.To.MemoryBytes != st.wantCurrent || f.TotalMemory != limit256 || f.Error != "" {
			t.Errorf("%s: follow = %+v", st.name, f)
		}
		if want := []string{runscScope + " memory systemd"}; !cmp.Equal(want, f.Written) {
			t.Errorf("%s: written = %q, want %q", st.name, f.Written, want)
		}
	}
	if r := readRecord(t, b); r.Follows[0].From.MemoryBytes != limit256 || r.Effective.MemoryBytes != limit256 {
		t.Errorf("first follow from %d, effective %d: want the boot limit %d kept", r.Follows[0].From.MemoryBytes, r.Effective.MemoryBytes, limit256)
	}
	// Nothing changed: no write, no new entry.
	h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
	if r := readRecord(t, b); len(r.Follows) != len(steps) {
		t.Errorf("a Follow without a resize added an entry: %+v", r.Follows[len(r.Follows)-1])
	}
	if len(h.sets) != len(steps) {
		t.Errorf("SetUnitProperties calls = %q, want %d", h.sets, len(steps))
	}
	for _, s := range h.sets {
		if s != "cri-containerd-"+sandboxID+".scope runtime=true" {
			t.Errorf("SetUnitProperties %s, want runsc's scope, runtime", s)
		}
	}
}

// TestFollowCPU: a CPU quota the guard gave the sandbox follows the pod's.
func TestFollowCPU(t *testing.T) {
	h := newFakeHost(t, "268435456")
	h.write(h.cgroups, podSlice+"/cpu.max", "50000 100000\n")
	_, b := followBed(t, h, runscScope, "268435456", "50000 100000")
	for _, st := range []struct{ pod, want string }{
		{"200000 100000", "200000 100000"},
		{"20000 100000", "20000 100000"},
		{"max 100000", "max 100000"},
	} {
		h.write(h.cgroups, podSlice+"/cpu.max", st.pod+"\n")
		h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
		if got := h.read(t, runscScope+"/cpu.max"); got != st.want {
			t.Errorf("pod cpu.max %s: scope cpu.max = %s, want %s", st.pod, got, st.want)
		}
		if got := h.read(t, runscScope+"/memory.max"); got != "268435456" {
			t.Errorf("pod cpu.max %s: scope memory.max = %s, want it untouched", st.pod, got)
		}
	}
	r := readRecord(t, b)
	if len(r.Follows) != 3 || r.Current.CPUQuota != 0 || r.Follows[0].To.CPUQuota != 200000 {
		t.Errorf("record follows %+v current %+v", r.Follows, r.Current)
	}
}

// TestFollowFromAnyContainer: an Update names an app container; Follow
// finds its sandbox through its record and follows it once. A container
// the guard made no record for (not CRI, an exec id the router passed on)
// is nothing to follow.
func TestFollowFromAnyContainer(t *testing.T) {
	h := newFakeHost(t, "268435456")
	tb, b := followBed(t, h, runscScope, "268435456", "")
	const app = "app0123456789"
	ab := filepath.Join(tb.bundles, app)
	if err := os.MkdirAll(ab, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := cgroupfix.Record{ContainerID: app, ContainerType: "container", SandboxID: sandboxID, CgroupsPath: "x", PodCgroup: podSlice, Outcome: "ok"}
	writeRecordForTest(t, ab, rec)
	h.write(h.cgroups, podSlice+"/memory.max", "536870912\n")

	fix := h.fixFor(config.PolicyEnforce, true)
	fix.Follow(context.Background(), map[string]string{"exec-1": filepath.Join(tb.bundles, "exec-1")})
	if got := h.read(t, runscScope+"/memory.max"); got != "268435456" {
		t.Errorf("Follow of an unknown id wrote the scope: %s", got)
	}
	fix.Follow(context.Background(), map[string]string{app: ab, sandboxID: b})
	if got := h.read(t, runscScope+"/memory.max"); got != "536870912" {
		t.Errorf("scope memory.max = %s after the app's Follow, want 536870912", got)
	}
	if r := readRecord(t, b); len(r.Follows) != 1 {
		t.Errorf("follows = %+v, want the sandbox followed once", r.Follows)
	}
	if r := readRecord(t, ab); r.Current != nil || len(r.Follows) != 0 {
		t.Errorf("the app container's record changed: %+v", r)
	}
}

func writeRecordForTest(t *testing.T, bundle string, rec cgroupfix.Record) {
	t.Helper()
	w := &work{fix: &SandboxFix{}, req: &taskAPI.CreateTaskRequest{ID: rec.ContainerID, Bundle: bundle}, rec: &rec}
	w.finish(context.Background())
}

// TestFollowMovedAndFallback: a sandbox the guard moved into its own scope
// (old runsc without systemd-cgroup) has that scope follow; when systemd
// does not apply the property, the cgroup file is written instead.
func TestFollowMovedAndFallback(t *testing.T) {
	h := newFakeHost(t, "268435456")
	fix := h.fixFor(config.PolicyEnforce, false) // runsc knows no flags: a move
	tb, b := setup(t, h, fix, 0, misplaced, nodeRAM)
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	moved := podSlice + "/runsc-guard-" + sandboxID + ".scope"
	h.write(h.cgroups, moved+"/memory.max", "268435456\n") // systemd applied MemoryMax
	h.setIgnore = true
	h.write(h.cgroups, podSlice+"/memory.max", "536870912\n")
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	if got := h.read(t, moved+"/memory.max"); got != "536870912" {
		t.Errorf("moved scope memory.max = %s, want 536870912", got)
	}
	r := readRecord(t, b)
	if len(r.Follows) != 1 || !cmp.Equal([]string{moved + " memory file"}, r.Follows[0].Written) || r.Follows[0].TotalMemory != nodeRAM {
		t.Errorf("follows = %+v", r.Follows)
	}
	// systemd refusing is the same: the file is written.
	h.setIgnore, h.setErr = false, errors.New("org.freedesktop.DBus.Error.AccessDenied")
	h.write(h.cgroups, podSlice+"/memory.max", "268435456\n")
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	if got := h.read(t, moved+"/memory.max"); got != "268435456" {
		t.Errorf("moved scope memory.max = %s after systemd refused, want 268435456", got)
	}
	// A write that fails is recorded once, retried at the next Follow,
	// and not recorded again while it fails the same way.
	h.write(h.cgroups, podSlice+"/memory.max", "536870912\n")
	if err := os.RemoveAll(filepath.Join(h.cgroups, moved)); err != nil {
		t.Fatal(err)
	}
	h.write(h.cgroups, moved+"/memory.max/x", "") // memory.max is a directory: the write fails
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	r = readRecord(t, b)
	if len(r.Follows) != 3 || r.Follows[2].Error == "" {
		t.Errorf("follows after a failing write = %+v, want it recorded once with its error", r.Follows)
	}
	// Fixed meanwhile: the next retry succeeds and says so.
	if err := os.RemoveAll(filepath.Join(h.cgroups, moved)); err != nil {
		t.Fatal(err)
	}
	h.write(h.cgroups, moved+"/memory.max", "536870912\n")
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	fix.Follow(context.Background(), map[string]string{sandboxID: b})
	r = readRecord(t, b)
	if len(r.Follows) != 4 || r.Follows[3].Error != "" {
		t.Errorf("follows after the retry succeeded = %+v, want one more without an error", r.Follows)
	}
}

// TestFollowNothingPinned: a runsc that left the sandbox's cgroup
// unlimited (the 2026 runsc) needs no write; the resize is still recorded.
// A pod cgroup that is gone (the pod is being removed) is not followed.
func TestFollowNothingPinned(t *testing.T) {
	h := newFakeHost(t, "268435456")
	_, b := followBed(t, h, runscScope, "max", "")
	h.write(h.cgroups, podSlice+"/memory.max", "536870912\n")
	h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
	r := readRecord(t, b)
	if len(r.Follows) != 1 || len(r.Follows[0].Written) != 0 || r.Current.MemoryBytes != 536870912 || len(h.sets) != 0 {
		t.Errorf("follows %+v current %+v sets %q: want the resize recorded, nothing written", r.Follows, r.Current, h.sets)
	}
	if err := os.RemoveAll(filepath.Join(h.cgroups, podSlice)); err != nil {
		t.Fatal(err)
	}
	h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
	if r := readRecord(t, b); len(r.Follows) != 1 {
		t.Errorf("a gone pod cgroup was followed: %+v", r.Follows)
	}
}

// TestFollowCgroupfs: with the cgroupfs driver the sandbox's leaf is not a
// unit: its file is written.
func TestFollowCgroupfs(t *testing.T) {
	const pod = "/kubepods/burstable/podU1"
	h := newFakeHost(t, "max")
	h.write(h.cgroups, pod+"/memory.max", "268435456\n")
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, h.fixFor(config.PolicyEnforce, true))
	b := sandboxBundle(t, tb, sandboxID, pod+"/"+sandboxID, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) {
		h.runsc(b, pod+"/"+sandboxID, limit256)
		h.write(h.cgroups, pod+"/"+sandboxID+"/memory.max", "268435456\n")
	}
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	h.write(h.cgroups, pod+"/memory.max", "536870912\n")
	h.fixFor(config.PolicyEnforce, true).Follow(context.Background(), map[string]string{sandboxID: b})
	if got := h.read(t, pod+"/"+sandboxID+"/memory.max"); got != "536870912" {
		t.Errorf("leaf memory.max = %s, want 536870912", got)
	}
	if len(h.sets) != 0 {
		t.Errorf("systemd asked for a cgroupfs leaf: %q", h.sets)
	}
}
