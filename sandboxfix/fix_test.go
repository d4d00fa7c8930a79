package sandboxfix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
)

const (
	podSlice    = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podU1.slice"
	sandboxID   = "sb0123456789"
	limit256    = 268435456
	nodeRAM     = 4103290880
	sandboxPID  = 4001
	goferPID    = 4002
	helperPID   = 4003
	shimPID     = 3000 // containerd.service neighbour that must never move
	systemdPath = "kubepods-burstable-podU1.slice:cri-containerd:" + sandboxID
)

// fakeHost is a cgroupfs tree, a /proc tree and systemd, in a temp dir.
type fakeHost struct {
	t          *testing.T
	cgroups    string
	proc       string
	mu         sync.Mutex
	units      []string
	props      map[string][]dbus.Property
	failMove   bool
	moveIgnore bool
	// dropBus fails this many moves as a broken D-Bus connection would.
	dropBus  int
	connects int
	release  int // what `runsc --version` says; Debian's by default
	// sets are the units SetUnitProperties was called for; setErr fails
	// it, setIgnore makes it succeed without writing (the fallback).
	sets      []string
	setErr    error
	setIgnore bool
	// v1: /proc/<pid>/cgroup in cgroup v1's form (newFakeHostV1).
	v1 bool
}

// cgroupLines is /proc/<pid>/cgroup for a process in cg (in every v1
// hierarchy on a v1 host).
func (h *fakeHost) cgroupLines(cg string) string {
	if !h.v1 {
		return "0::" + cg + "\n"
	}
	return "12:memory:" + cg + "\n11:cpu,cpuacct:" + cg + "\n10:pids:" + cg + "\n1:name=systemd:" + cg + "\n"
}

func newFakeHost(t *testing.T, podMax string) *fakeHost {
	h := &fakeHost{t: t, cgroups: t.TempDir(), proc: t.TempDir(), props: map[string][]dbus.Property{}, release: 20221219}
	h.write(h.cgroups, "cgroup.controllers", "cpuset cpu io memory pids\n")
	for _, d := range []string{"/kubepods.slice", "/kubepods.slice/kubepods-burstable.slice", "/system.slice"} {
		h.write(h.cgroups, d+"/memory.max", "max\n")
	}
	h.write(h.cgroups, podSlice+"/memory.max", podMax+"\n")
	return h
}

func (h *fakeHost) write(root, p, content string) {
	h.t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// proc makes a process with a command line and a cgroup.
func (h *fakeHost) procAt(pid int, cg string, argv ...string) {
	h.write(h.proc, fmt.Sprintf("%d/cmdline", pid), strings.Join(argv, "\x00")+"\x00")
	h.write(h.proc, fmt.Sprintf("%d/cgroup", pid), h.cgroupLines(cg))
}

// runsc plays what runsc does at create: a sandbox booted with
// totalMemory, its gofer and a helper process, all in cg.
func (h *fakeHost) runsc(bundle, cg string, totalMemory uint64) {
	h.procAt(sandboxPID, cg, "runsc-sandbox", "--root=/run/containerd/runsc/k8s.io", "boot",
		"--bundle="+bundle, fmt.Sprintf("--cpu-num=%d", 96), fmt.Sprintf("--total-memory=%d", totalMemory), sandboxID)
	h.procAt(goferPID, cg, "runsc-gofer", "--root=/run/containerd/runsc/k8s.io", "gofer", "--bundle", bundle, "--spec-fd=3")
	h.procAt(helperPID, cg, "exe")
	h.procAt(shimPID, "/system.slice/containerd.service", "containerd-shim-runsc-v1")
	procs := cg + "/cgroup.procs"
	if h.v1 {
		procs = "memory" + procs
	}
	h.write(h.cgroups, procs, fmt.Sprintf("%d\n%d\n%d\n", sandboxPID, goferPID, helperPID))
}

// StartTransientUnitContext moves the pids, as systemd would.
func (h *fakeHost) StartTransientUnitContext(_ context.Context, name, mode string, props []dbus.Property, ch chan<- string) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.units = append(h.units, name)
	h.props[name] = props
	if h.dropBus > 0 {
		h.dropBus--
		return 0, godbus.ErrClosed
	}
	if h.failMove {
		return 0, errors.New("org.freedesktop.systemd1.UnitExists: unit exists")
	}
	var slice string
	var pids []uint32
	for _, p := range props {
		switch p.Name {
		case "Slice":
			slice = p.Value.Value().(string)
		case "PIDs":
			pids = p.Value.Value().([]uint32)
		}
	}
	exp, _ := cgroupfix.ExpandSlice(slice)
	if h.v1 {
		// A hybrid node: systemd makes the unit's cgroup in its v2
		// hierarchy too.
		if _, err := os.Stat(filepath.Join(h.cgroups, "unified", "cgroup.procs")); err == nil {
			h.write(h.cgroups, "unified"+exp+"/"+name+"/cgroup.procs", "")
		}
	}
	if !h.moveIgnore {
		for _, pid := range pids {
			h.write(h.proc, fmt.Sprintf("%d/cgroup", pid), h.cgroupLines(exp+"/"+name))
		}
	}
	ch <- "done"
	return 1, nil
}

// SetUnitPropertiesContext writes MemoryMax and CPUQuotaPerSecUSec into
// the unit's cgroup as systemd would (unless setIgnore), failing with
// setErr when set.
func (h *fakeHost) SetUnitPropertiesContext(_ context.Context, name string, runtime bool, props ...dbus.Property) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sets = append(h.sets, fmt.Sprintf("%s runtime=%v", name, runtime))
	if h.setErr != nil {
		return h.setErr
	}
	if h.setIgnore {
		return nil
	}
	var dir string
	_ = filepath.WalkDir(h.cgroups, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == name {
			dir = p
		}
		return nil
	})
	if dir == "" {
		return godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit"}
	}
	for _, p := range props {
		v := p.Value.Value().(uint64)
		switch p.Name {
		case "MemoryMax":
			s := "max"
			if v != math.MaxUint64 {
				s = fmt.Sprint(v)
			}
			if h.v1 {
				h.write(dir, "memory.limit_in_bytes", s)
			} else {
				h.write(dir, "memory.max", s)
			}
		case "CPUQuotaPerSecUSec":
			s := "max"
			if v != math.MaxUint64 {
				s = fmt.Sprint(v / 10) // of a 100 ms period
			}
			h.write(dir, "cpu.max", s+" 100000")
		}
	}
	return nil
}

func (h *fakeHost) ResetFailedUnitContext(context.Context, string) error {
	return godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit"}
}

// fixFor returns a SandboxFix wired to the fake host; runsc knows flags
// unless told otherwise.
func (h *fakeHost) fixFor(policy config.Policy, knows bool) *SandboxFix {
	return &SandboxFix{
		Config: config.Config{Policy: policy, AddRunscFlags: true, CgroupRoot: h.cgroups, ProcRoot: h.proc},
		Systemd: func(context.Context) (cgroupfix.Systemd, func(), error) {
			h.mu.Lock()
			h.connects++
			h.mu.Unlock()
			return h, func() {}, nil
		},
		KnowsFlag: func(context.Context, string, string) bool { return knows },
		Release:   func(context.Context, string) int { return h.release },
		Now:       func() time.Time { return time.Unix(0, 0) },
	}
}

// sandboxBundle writes a CRI sandbox bundle with the given cgroupsPath and
// spec memory limit (0: none) into the test bed's bundles dir.
func sandboxBundle(t *testing.T, tb *testBed, id, cgroupsPath string, specLimit int64) string {
	t.Helper()
	b := filepath.Join(tb.bundles, id)
	linux := map[string]any{"cgroupsPath": cgroupsPath, "uidMappings": []any{map[string]any{"containerID": 0, "hostID": 4294967294, "size": 1}}}
	if specLimit > 0 {
		linux["resources"] = map[string]any{"memory": map[string]any{"limit": specLimit}}
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process":    map[string]any{"args": []string{"/pause"}, "futureField": "kept"},
		"annotations": map[string]string{
			cri.ContainerType: cri.ContainerTypeSandbox, cri.SandboxID: id,
			cri.SandboxName: "eater", cri.SandboxNamespace: "default", cri.SandboxUID: "U1",
			"io.kubernetes.cri.sandbox-memory": "268435456",
		},
		"linux": linux,
	}
	b2, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b, "config.json"), b2, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// optionsAny is CRI's runtime options naming a runsc options file.
func optionsAny(t *testing.T, dir, body string) (*anypb.Any, string) {
	t.Helper()
	p := filepath.Join(dir, "runsc.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	v, _ := proto.Marshal(&runtimeoptions.Options{TypeUrl: "io.containerd.runsc.v1.options", ConfigPath: p})
	return &anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: v}, p
}

func readRecord(t *testing.T, bundle string) cgroupfix.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, cgroupfix.RecordFile))
	if err != nil {
		t.Fatalf("decision record: %v", err)
	}
	var r cgroupfix.Record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// setup is one sandbox Create through the guard against a fake delegate
// whose Create plays runsc placing the sandbox in cg.
func setup(t *testing.T, h *fakeHost, fix *SandboxFix, specLimit int64, cg string, total uint64) (*testBed, string) {
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, fix)
	b := sandboxBundle(t, tb, sandboxID, systemdPath, specLimit)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.runsc(b, cg, total) }
	return tb, b
}

const misplaced = "/system.slice/" + systemdPath

func TestSandboxFixOldRunscMisplaced(t *testing.T) {
	h := newFakeHost(t, "268435456")
	tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
	opts, _ := optionsAny(t, tb.dir, "binary_name = \"/usr/bin/runsc\"\n[runsc_config]\n  network = \"none\"\n")

	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}

	// runsc got the pod limit in the spec, other fields intact.
	spec, err := ocispec.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := specMemory(spec); got != limit256 {
		t.Errorf("config.json memory limit = %d, want %d", got, limit256)
	}
	raw, _ := os.ReadFile(filepath.Join(b, "config.json"))
	for _, keep := range []string{`"futureField":"kept"`, `"hostID":4294967294`} {
		if !strings.Contains(string(raw), keep) {
			t.Errorf("config.json lost %s: %s", keep, raw)
		}
	}
	// runsc got options with systemd-cgroup, the rest kept.
	got := tb.fakes["d1"].last().req.(*taskAPI.CreateTaskRequest)
	var o runtimeoptions.Options
	if err := proto.Unmarshal(got.Options.Value, &o); err != nil || got.Options.TypeUrl != "runtimeoptions.v1.Options" {
		t.Fatalf("delegate options %v: %v", got.Options, err)
	}
	if want := filepath.Join(b, optionsFile); o.ConfigPath != want {
		t.Errorf("delegate ConfigPath = %q, want %q", o.ConfigPath, want)
	}
	body, _ := os.ReadFile(o.ConfigPath)
	for _, want := range []string{"systemd-cgroup = 'true'", "network = 'none'", "binary_name = '/usr/bin/runsc'"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("options file lacks %s:\n%s", want, body)
		}
	}
	// Every process of the misplaced sandbox cgroup moved, the shim's
	// neighbour did not.
	if diff := cmp.Diff([]string{"runsc-guard-" + sandboxID + ".scope"}, h.units); diff != "" {
		t.Errorf("systemd units (-want +got):\n%s", diff)
	}
	var pids []uint32
	var mem uint64
	for _, p := range h.props[h.units[0]] {
		switch p.Name {
		case "PIDs":
			pids = p.Value.Value().([]uint32)
		case "MemoryMax":
			mem = p.Value.Value().(uint64)
		}
	}
	if diff := cmp.Diff([]uint32{sandboxPID, goferPID, helperPID}, pids); diff != "" {
		t.Errorf("moved pids (-want +got):\n%s", diff)
	}
	if mem != limit256 {
		t.Errorf("scope MemoryMax = %d, want %d", mem, limit256)
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit", "runsc-flag", "move"}, r.Actions); diff != "" {
		t.Errorf("record actions (-want +got):\n%s", diff)
	}
	if r.Outcome != "ok" || r.Effective.MemoryBytes != limit256 || r.TotalMemory != nodeRAM || r.PodCgroup != podSlice || r.PodName != "eater" {
		t.Errorf("record = %+v", r)
	}
	// The record names the sandbox and its gofer where runsc put them, and
	// both again after the move.
	wantBefore := []cgroupfix.Proc{{PID: sandboxPID, Argv0: "runsc-sandbox", Cgroup: misplaced}, {PID: goferPID, Argv0: "runsc-gofer", Cgroup: misplaced}}
	if diff := cmp.Diff(wantBefore, r.PlacementBefore); diff != "" {
		t.Errorf("record placement_before (-want +got):\n%s", diff)
	}
	if len(r.PlacementAfter) != len(wantBefore) {
		t.Errorf("record placement_after = %+v, want the sandbox and its gofer", r.PlacementAfter)
	}
	for _, p := range r.PlacementAfter {
		if !cgroupfix.Within(podSlice, p.Cgroup) {
			t.Errorf("after the move %s[%d] is in %s", p.Argv0, p.PID, p.Cgroup)
		}
	}
	if !strings.Contains(strings.Join(r.Warnings, ";"), "--total-memory=4103290880") {
		t.Errorf("record warnings %q do not report the wrong --total-memory", r.Warnings)
	}
}

// TestSandboxFixNoRunscFlags: with add_runsc_flags = false the options
// reach runsc untouched and the move alone places the sandbox.
func TestSandboxFixNoRunscFlags(t *testing.T) {
	h := newFakeHost(t, "268435456")
	fix := h.fixFor(config.PolicyEnforce, true)
	fix.Config.AddRunscFlags = false
	tb, b := setup(t, h, fix, 0, misplaced, limit256)
	opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  network = \"none\"\n")
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got := tb.fakes["d1"].last().req.(*taskAPI.CreateTaskRequest).Options; !proto.Equal(got, opts) {
		t.Errorf("delegate options = %v, want the original %v", got, opts)
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit", "move"}, r.Actions); diff != "" {
		t.Errorf("record actions (-want +got):\n%s", diff)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings %v, want none (--total-memory is right)", r.Warnings)
	}
}

// TestSandboxFixNothingToDo: a node that is already right (new runsc with
// systemd-cgroup, spec at the pod limit) is left exactly as it was.
func TestSandboxFixNothingToDo(t *testing.T) {
	h := newFakeHost(t, "268435456")
	tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), limit256, podSlice+"/cri-containerd-"+sandboxID+".scope", limit256)
	opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  systemd-cgroup = \"true\"\n")
	before, _ := os.ReadFile(filepath.Join(b, "config.json"))

	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(b, "config.json"))
	if string(before) != string(after) {
		t.Errorf("config.json changed:\n%s\n->\n%s", before, after)
	}
	if got := tb.fakes["d1"].last().req.(*taskAPI.CreateTaskRequest).Options; !proto.Equal(got, opts) {
		t.Errorf("delegate options = %v, want the original %v", got, opts)
	}
	if len(h.units) != 0 {
		t.Errorf("systemd units started: %v, want none", h.units)
	}
	r := readRecord(t, b)
	if len(r.Actions) != 0 || r.Outcome != "ok" || len(r.Warnings) != 0 {
		t.Errorf("record actions %v outcome %s warnings %v; want none, ok, none", r.Actions, r.Outcome, r.Warnings)
	}
}

// TestSandboxFixNewRunsc: a runsc that reads the parent's memory.max, with
// systemd-cgroup on, sizes the sandbox right by itself: the guard leaves the
// spec and the options alone, unless an ancestor above the pod (node
// allocatable on kubepods.slice) is tighter than what runsc reads, or the
// runsc release is unknown.
func TestSandboxFixNewRunsc(t *testing.T) {
	for _, tc := range []struct {
		name        string
		release     int
		kubepodsMax string
		wantActions []string
		wantSpec    uint64
	}{
		{"right already", 20260905, "max", []string{}, 0},
		{"node allocatable tighter", 20260905, "134217728", []string{"spec-limit"}, 134217728},
		{"unknown release", 0, "max", []string{"spec-limit"}, limit256},
		{"before the parent fix", 20231009, "max", []string{"spec-limit"}, limit256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, "268435456")
			h.release = tc.release
			h.write(h.cgroups, "/kubepods.slice/memory.max", tc.kubepodsMax+"\n")
			tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, podSlice+"/cri-containerd-"+sandboxID+".scope", limit256)
			opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  systemd-cgroup = \"true\"\n")
			if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
				t.Fatalf("Create: %v", err)
			}
			spec, _ := ocispec.Read(b)
			if got := specMemory(spec); got != tc.wantSpec {
				t.Errorf("config.json memory limit = %d, want %d", got, tc.wantSpec)
			}
			if got := tb.fakes["d1"].last().req.(*taskAPI.CreateTaskRequest).Options; !proto.Equal(got, opts) {
				t.Errorf("delegate options = %v, want the original %v", got, opts)
			}
			if r := readRecord(t, b); !cmp.Equal(tc.wantActions, r.Actions) {
				t.Errorf("record actions = %v, want %v", r.Actions, tc.wantActions)
			}
		})
	}
}

func TestSandboxFixPolicy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		policy     config.Policy
		failMove   bool
		moveIgnore bool
	}{
		{"enforce/move fails", config.PolicyEnforce, true, false},
		{"enforce/move has no effect", config.PolicyEnforce, false, true},
		{"warn/move fails", config.PolicyWarn, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, "268435456")
			h.failMove, h.moveIgnore = tc.failMove, tc.moveIgnore
			tb, b := setup(t, h, h.fixFor(tc.policy, false), 0, misplaced, nodeRAM)
			_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
			methods := []string{}
			for _, c := range tb.fakes["d1"].calls {
				methods = append(methods, c.method)
			}
			r := readRecord(t, b)
			if tc.policy == config.PolicyWarn {
				if err != nil {
					t.Fatalf("Create under warn: %v", err)
				}
				if r.Outcome != "warn" || r.Error == "" {
					t.Errorf("record outcome %q error %q, want warn with the error", r.Outcome, r.Error)
				}
				if diff := cmp.Diff([]string{"Create"}, methods); diff != "" {
					t.Errorf("delegate calls (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatal("Create under enforce succeeded with the sandbox outside the pod")
			}
			for _, want := range []string{"default/eater", "uid U1", "limit 268435456", "--total-memory 4103290880", podSlice} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			// The refusal comes after runsc created the sandbox; the
			// router then kills and deletes it (proxy's
			// TestAfterCreateRefusalAborts).
			if diff := cmp.Diff([]string{"Create"}, methods); diff != "" {
				t.Errorf("delegate calls (-want +got):\n%s", diff)
			}
			if !errors.Is(err, ErrLimitNotEffective) {
				t.Errorf("error %v is not ErrLimitNotEffective", err)
			}
			if r.Outcome != "refused" {
				t.Errorf("record outcome %q, want refused", r.Outcome)
			}
		})
	}
}

// TestSandboxFixUnreadableLimit: a limit the guard cannot read fails the
// Create before runsc runs, under enforce.
func TestSandboxFixUnreadableLimit(t *testing.T) {
	h := newFakeHost(t, "lots")
	tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
	_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
	if err == nil || !strings.Contains(err.Error(), ErrLimitNotEffective.Error()) || !strings.Contains(err.Error(), `"lots"`) {
		t.Fatalf("Create error = %v, want a refusal naming the bad value", err)
	}
	if n := len(tb.fakes["d1"].calls); n != 0 {
		t.Errorf("delegate got %d calls, want none", n)
	}
}

// TestSandboxFixUnlimitedPod: a pod without a limit (BestEffort, or one
// container without a limit) stays unlimited: the guard never tightens
// below kubelet, whatever the sandbox-memory annotation says.
func TestSandboxFixUnlimitedPod(t *testing.T) {
	h := newFakeHost(t, "max")
	tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, podSlice+"/cri-containerd-"+sandboxID+".scope", nodeRAM)
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	spec, _ := ocispec.Read(b)
	if got := specMemory(spec); got != 0 {
		t.Errorf("config.json memory limit = %d, want none", got)
	}
	r := readRecord(t, b)
	if r.Effective.MemoryBytes != 0 || r.Annotation == nil || r.Annotation.MemoryBytes != limit256 {
		t.Errorf("record effective %d annotation %+v; want unlimited, annotation 256Mi recorded", r.Effective.MemoryBytes, r.Annotation)
	}
}

// TestSandboxFixCgroupfsLeaf: with the cgroupfs driver runsc applies the
// spec's resources only to a cgroup it creates, so an existing leaf is made
// to carry the pod limit before runsc reads it.
func TestSandboxFixCgroupfsLeaf(t *testing.T) {
	const pod = "/kubepods/burstable/podU1"
	h := newFakeHost(t, "max")
	h.write(h.cgroups, pod+"/memory.max", "268435456\n")
	h.write(h.cgroups, pod+"/"+sandboxID+"/memory.max", "max\n")
	tb := newTestBed(t, map[string]string{sandboxID: "d1"}, h.fixFor(config.PolicyEnforce, true))
	b := sandboxBundle(t, tb, sandboxID, pod+"/"+sandboxID, 0)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.runsc(b, pod+"/"+sandboxID, limit256) }
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(h.cgroups, pod, sandboxID, "memory.max"))
	if strings.TrimSpace(string(got)) != "268435456" {
		t.Errorf("leaf memory.max = %q, want 268435456", got)
	}
	r := readRecord(t, b)
	if diff := cmp.Diff([]string{"spec-limit", "leaf-limit"}, r.Actions); diff != "" || !r.LeafLimitWritten {
		t.Errorf("record actions (-want +got):\n%s (leaf_limit_written %v)", diff, r.LeafLimitWritten)
	}
	if len(h.units) != 0 {
		t.Errorf("systemd units started for a cgroupfs pod: %v", h.units)
	}
}

// appBundle writes a CRI app container bundle of the sandbox's pod.
func appBundle(t *testing.T, tb *testBed, id string) string {
	t.Helper()
	b := sandboxBundle(t, tb, id, "kubepods-burstable-podU1.slice:cri-containerd:"+id, 0)
	raw, _ := os.ReadFile(filepath.Join(b, "config.json"))
	raw = []byte(strings.Replace(string(raw), `"io.kubernetes.cri.container-type":"sandbox"`, `"io.kubernetes.cri.container-type":"container"`, 1))
	if err := os.WriteFile(filepath.Join(b, "config.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// goferInShimCgroup plays old runsc leaving an app container's gofer in
// the runsc shim's cgroup, which containerd's other processes share.
func (h *fakeHost) goferInShimCgroup(bundle string) {
	const shared = "/system.slice/containerd.service"
	h.procAt(goferPID, shared, "runsc-gofer", "gofer", "--bundle="+bundle)
	h.procAt(shimPID, shared, "containerd-shim-runsc-v1")
	h.write(h.cgroups, shared+"/cgroup.procs", fmt.Sprintf("%d\n%d\n", shimPID, goferPID))
}

// assertGoferMoved checks that only the gofer moved, into unit in the pod
// slice, with no memory limit of its own.
func (h *fakeHost) assertGoferMoved(t *testing.T, unit string) {
	t.Helper()
	if diff := cmp.Diff([]string{unit}, h.units); diff != "" {
		t.Fatalf("systemd units (-want +got):\n%s", diff)
	}
	for _, p := range h.props[unit] {
		switch p.Name {
		case "PIDs":
			if diff := cmp.Diff([]uint32{goferPID}, p.Value.Value().([]uint32)); diff != "" {
				t.Errorf("moved pids (-want +got):\n%s", diff)
			}
		case "MemoryMax":
			t.Errorf("app gofer scope has MemoryMax %v, want none", p.Value)
		case "Slice":
			if got := p.Value.Value().(string); got != "kubepods-burstable-podU1.slice" {
				t.Errorf("scope slice = %q, want the pod slice", got)
			}
		}
	}
}

// TestAppContainerGofer: an app container's gofer left in
// containerd.service at Create moves alone into a scope in the pod slice,
// never containerd's other processes.
func TestAppContainerGofer(t *testing.T) {
	const appID = "app0123456789"
	h := newFakeHost(t, "268435456")
	tb := newTestBed(t, map[string]string{appID: "d1"}, h.fixFor(config.PolicyEnforce, true))
	b := appBundle(t, tb, appID)
	tb.fakes["d1"].onCreate = func(*taskAPI.CreateTaskRequest) { h.goferInShimCgroup(b) }
	if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: appID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	h.assertGoferMoved(t, "runsc-guard-"+appID+".scope")
	spec, _ := ocispec.Read(b)
	if got := specMemory(spec); got != 0 {
		t.Errorf("app container spec got a memory limit %d; only the sandbox's is edited", got)
	}
}

// TestAppContainerGoferAtStart: Debian's runsc starts an app container's
// gofer at Start, after the Create check (seen in the VM test bed); the
// guard checks again after Start and moves it. An exec's Start is not
// checked.
func TestAppContainerGoferAtStart(t *testing.T) {
	const appID = "app0123456789"
	h := newFakeHost(t, "268435456")
	tb := newTestBed(t, map[string]string{appID: "d1"}, h.fixFor(config.PolicyEnforce, true))
	b := appBundle(t, tb, appID)
	tb.fakes["d1"].onStart = func(r *taskAPI.StartRequest) {
		if r.ExecID == "" {
			h.goferInShimCgroup(b)
		}
	}
	ctx := context.Background()
	if _, err := tb.guard.Create(ctx, &taskAPI.CreateTaskRequest{ID: appID, Bundle: b}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if len(h.units) != 0 {
		t.Fatalf("units after Create: %v, want none (no gofer yet)", h.units)
	}
	if _, err := tb.guard.Start(ctx, &taskAPI.StartRequest{ID: appID}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	h.assertGoferMoved(t, "runsc-guard-"+appID+"-started.scope")
	r := readRecord(t, b)
	if !slices.Contains(r.Actions, "move") || len(r.PlacementAfter) != 1 || !cgroupfix.Within(podSlice, r.PlacementAfter[0].Cgroup) {
		t.Errorf("record after start: actions %v placement_after %+v", r.Actions, r.PlacementAfter)
	}
	h.units = nil
	h.goferInShimCgroup(b) // misplaced again: an exec's Start must not look
	if _, err := tb.guard.Start(ctx, &taskAPI.StartRequest{ID: appID, ExecID: "e1"}); err != nil {
		t.Fatalf("Start(exec): %v", err)
	}
	if len(h.units) != 0 {
		t.Errorf("an exec's Start moved processes: %v", h.units)
	}
}

// TestSandboxFixBusDropped: a D-Bus connection that breaks during the move
// is replaced once; the move then succeeds and the pod is not refused.
func TestSandboxFixBusDropped(t *testing.T) {
	for _, drops := range []int{1, 2} {
		h := newFakeHost(t, "268435456")
		h.dropBus = drops
		tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
		_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
		if drops == 1 && err != nil {
			t.Errorf("one dropped connection: Create: %v, want the move retried on a new one", err)
		}
		if drops == 2 && !errors.Is(err, ErrLimitNotEffective) {
			t.Errorf("connection dropped twice: Create: %v, want the refusal", err)
		}
		if h.connects != 2 {
			t.Errorf("%d drops: %d D-Bus connections, want 2", drops, h.connects)
		}
	}
}

// TestSandboxFixHostileBundle: files planted in a bundle cannot hang the
// guard or make it write outside the bundle.
func TestSandboxFixHostileBundle(t *testing.T) {
	t.Run("FIFO as config.json", func(t *testing.T) {
		h := newFakeHost(t, "268435456")
		tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
		os.Remove(filepath.Join(b, "config.json"))
		if err := syscall.Mkfifo(filepath.Join(b, "config.json"), 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := tb.guard.fix.BeforeCreate(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
			done <- err
		}()
		select {
		case <-done: // an unreadable spec passes through: the runsc shim reports it
		case <-time.After(5 * time.Second):
			t.Fatal("BeforeCreate hung on a FIFO config.json")
		}
	})
	t.Run("symlinks out of the bundle", func(t *testing.T) {
		h := newFakeHost(t, "268435456")
		tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
		opts, _ := optionsAny(t, tb.dir, "[runsc_config]\n  network = \"none\"\n")
		outside := t.TempDir()
		for _, name := range []string{cgroupfix.RecordFile, optionsFile} {
			target := filepath.Join(outside, name)
			os.WriteFile(target, []byte("precious"), 0o644)
			if err := os.Symlink(target, filepath.Join(b, name)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b, Options: opts}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		for _, name := range []string{cgroupfix.RecordFile, optionsFile} {
			if got, _ := os.ReadFile(filepath.Join(outside, name)); string(got) != "precious" {
				t.Errorf("%s: the symlink's target outside the bundle was overwritten", name)
			}
			if st, err := os.Lstat(filepath.Join(b, name)); err != nil || !st.Mode().IsRegular() {
				t.Errorf("%s in the bundle: %v, %v; want the guard's own regular file", name, st, err)
			}
		}
	})
	t.Run("config.json a symlink", func(t *testing.T) {
		h := newFakeHost(t, "268435456")
		tb, b := setup(t, h, h.fixFor(config.PolicyEnforce, true), 0, misplaced, nodeRAM)
		outside := filepath.Join(t.TempDir(), "config.json")
		os.Rename(filepath.Join(b, "config.json"), outside)
		before, _ := os.ReadFile(outside)
		os.Symlink(outside, filepath.Join(b, "config.json"))
		tb.guard.fix.BeforeCreate(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
		if after, _ := os.ReadFile(outside); string(after) != string(before) {
			t.Errorf("a config.json symlinked out of the bundle had its target edited")
		}
	})
}

// TestPatchSpecFoldedKeys: a spec whose resources key is spelled so that
// Go's JSON decoder (runsc's) reads it instead of the guard's is refused,
// never patched into a limit runsc would not read.
func TestPatchSpecFoldedKeys(t *testing.T) {
	limit := int64(limit256)
	for name, spec := range map[string]string{
		"long s twin":    `{"linux":{"resources":{"memory":{"limit":1073741824}},"reſources":{"memory":{"limit":1073741824}}}}`,
		"long s alone":   `{"linux":{"reſources":{"memory":{"limit":1073741824}}}}`,
		"upper case":     `{"LINUX":{"resources":{"memory":{"limit":1073741824}}}}`,
		"unrelated keys": `{"linux":{"resources":{"memory":{"limit":268435456,"limitSwap":1}}}}`,
		"folded limit":   `{"linux":{"resources":{"memory":{"LIMIT":1073741824}}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			b := t.TempDir()
			os.WriteFile(filepath.Join(b, "config.json"), []byte(spec), 0o600)
			err := patchSpecResources(b, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
			if name == "unrelated keys" {
				// A key that only starts like one the guard writes is no twin.
				if err != nil {
					t.Fatalf("patch: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrFoldedKey) {
				t.Fatalf("patch: %v, want ErrFoldedKey", err)
			}
			if got, _ := os.ReadFile(filepath.Join(b, "config.json")); string(got) != spec {
				t.Errorf("refused spec was written: %s", got)
			}
		})
	}
}

// TestSandboxFixNoPodCgroup: a sandbox whose pod cgroup does not exist at
// Create would run with no limit at all (runsc or systemd make the cgroup
// without one): enforce refuses it, warn lets it run and says so.
func TestSandboxFixNoPodCgroup(t *testing.T) {
	for _, policy := range []config.Policy{config.PolicyEnforce, config.PolicyWarn} {
		t.Run(string(policy), func(t *testing.T) {
			h := newFakeHost(t, "268435456")
			if err := os.RemoveAll(filepath.Join(h.cgroups, podSlice)); err != nil {
				t.Fatal(err)
			}
			tb, b := setup(t, h, h.fixFor(policy, true), 0, podSlice+"/cri-containerd-"+sandboxID+".scope", nodeRAM)
			_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: sandboxID, Bundle: b})
			r := readRecord(t, b)
			if policy == config.PolicyWarn {
				if err != nil || r.Outcome != "warn" || !strings.Contains(r.Error, "does not exist") {
					t.Errorf("warn: Create %v, record %q %q; want it run, outcome warn naming the missing cgroup", err, r.Outcome, r.Error)
				}
				return
			}
			if !errors.Is(err, ErrNoPodCgroup) || !strings.Contains(err.Error(), podSlice) {
				t.Errorf("enforce: Create %v, want ErrNoPodCgroup naming %s", err, podSlice)
			}
			if n := len(tb.fakes["d1"].calls); n != 0 {
				t.Errorf("runsc shim got %d calls for a refused sandbox, want 0", n)
			}
		})
	}
}
