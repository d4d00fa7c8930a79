// Package sandboxfix is the guard's policy for gVisor pods: at each
// container's Create and Start it resolves the pod's limit, sizes the
// sandbox from it, makes runsc place it in the pod's cgroup, checks where
// runsc put its processes, moves them when they escaped, and records the
// decision.
package sandboxfix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/log"
	"github.com/coreos/go-systemd/v22/dbus"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
	"github.com/runsc-guard/runsc-guard/runsc"
)

const (
	// optionsFile is the runsc shim options the guard writes into a bundle
	// when it adds runsc flags.
	optionsFile = "runsc-guard-options.toml"
	// runtimeOptionsTypeURL is what CRI sends (runtimeoptions.v1.Options);
	// the runsc shim unmarshals only this type.
	runtimeOptionsTypeURL = "runtimeoptions.v1.Options"
)

// ErrLimitNotEffective: the pod limit cannot be made to hold for a sandbox.
var ErrLimitNotEffective = errors.New("pod memory limit cannot be made effective for gVisor sandbox")

// SandboxFix is the CreateHook that makes a gVisor pod's limit hold: it
// sizes the sandbox from the pod's effective limit, makes runsc place it
// under the pod cgroup, checks where runsc put its processes and moves them
// when runsc put them elsewhere.
type SandboxFix struct {
	Config config.Config
	// Systemd connects to systemd's D-Bus API; only called for a move.
	Systemd func(ctx context.Context) (cgroupfix.Systemd, func(), error)
	// KnowsFlag reports whether the runsc binary accepts a global flag.
	KnowsFlag func(ctx context.Context, runsc, flag string) bool
	// Release returns the runsc binary's release date (YYYYMMDD), 0 when
	// unknown.
	Release func(ctx context.Context, runsc string) int
	// Now stamps records.
	Now func() time.Time
	// Hold starts the process a scope is started with before runsc's
	// processes exist (cgroup v1, prepareScope).
	Hold func() (Holder, error)

	// hierarchy is detected once: the cgroup version of a node does not
	// change while the guard runs.
	hierarchyOnce sync.Once
	hier          cgroupfix.Hierarchy
	hierErr       error

	// followMu orders Follow and AfterStart, the writers of a record
	// after its Create.
	followMu sync.Mutex
}

// Holder keeps a transient scope alive until runsc's processes are in it
// (*cgroupfix.Holder).
type Holder interface {
	PID() int
	Release() error
}

// hierarchy returns the node's cgroup hierarchy under Config.CgroupRoot.
func (s *SandboxFix) hierarchy() (cgroupfix.Hierarchy, error) {
	s.hierarchyOnce.Do(func() {
		v, err := cgroupfix.DetectVersion(s.Config.CgroupRoot)
		if err != nil {
			s.hierErr = fmt.Errorf("detect cgroup version under %s: %w", s.Config.CgroupRoot, err)
			return
		}
		s.hier = cgroupfix.Hierarchy{Root: s.Config.CgroupRoot, Version: v}
		// Opened for the life of the guard's server, which reads the
		// pod's limits at every sandbox Create; unopened it still works.
		if h, _, err := s.hier.Open(); err == nil {
			s.hier = h
		}
	})
	return s.hier, s.hierErr
}

// New returns the fix wired to the host: systemd over D-Bus and
// runsc flag probes.
func New(cfg config.Config) *SandboxFix {
	return &SandboxFix{
		Config: cfg,
		Systemd: func(ctx context.Context) (cgroupfix.Systemd, func(), error) {
			c, err := dbus.NewSystemConnectionContext(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("connect to systemd: %w", err)
			}
			return c, c.Close, nil
		},
		KnowsFlag: runsc.Prober{CacheFile: cfg.ProbeCache}.ProbeFlag,
		Release:   runsc.Prober{CacheFile: cfg.ProbeCache}.ProbeRelease,
		Now:       time.Now,
		Hold: func() (Holder, error) {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("find the guard's binary for a scope holder: %w", err)
			}
			return cgroupfix.StartHolder(exe)
		},
	}
}

// BeforeCreate edits the container's runtime options and, for the pod
// sandbox, its spec, then returns the check to run after runsc created it.
func (s *SandboxFix) BeforeCreate(ctx context.Context, req *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error) {
	spec, err := ocispec.Read(req.Bundle)
	if err != nil {
		// The runsc shim reports a bundle it cannot read; nothing to fix.
		log.G(ctx).WithError(err).WithField("container_id", req.ID).Warn("no spec, container passed through")
		return nil, nil
	}
	ann := spec.Annotations
	ctype := ann[cri.ContainerType]
	if ctype != cri.ContainerTypeSandbox && ctype != cri.ContainerTypeContainer {
		return nil, nil // not a CRI container (ctr, tests): leave it alone
	}
	rec := &cgroupfix.Record{
		Time: s.Now().UTC(), ContainerID: req.ID, ContainerType: ctype,
		PodNamespace: ann[cri.SandboxNamespace], PodName: ann[cri.SandboxName], PodUID: ann[cri.SandboxUID],
		SandboxID: ann[cri.SandboxID], Actions: []string{}, Outcome: "ok",
	}
	if spec.Linux != nil {
		rec.CgroupsPath = spec.Linux.CgroupsPath
	}
	w := &work{fix: s, req: req, spec: spec, rec: rec}
	if err := w.before(ctx); err != nil {
		return nil, w.fail(ctx, err)
	}
	if rec.CgroupsPath == "" {
		w.finish(ctx)
		return nil, nil
	}
	return w.after, nil
}

// ErrNoPodCgroup: the sandbox's pod cgroup does not exist at its Create.
// kubelet always makes it before RunPodSandbox; without it runsc (or
// systemd) would make one with no limit at all.
var ErrNoPodCgroup = errors.New("pod cgroup does not exist at sandbox Create")

// work is one Create being fixed.
type work struct {
	fix  *SandboxFix
	req  *taskAPI.CreateTaskRequest
	spec *specs.Spec
	rec  *cgroupfix.Record
	h    cgroupfix.Hierarchy
	path cgroupfix.CgroupsPath
	// The container's runsc options (optsKnown: of a type the guard
	// edits), the flags to add, and whether systemd-cgroup will be on.
	opts        *runtimeoptions.Options
	optsBody    []byte
	optsKnown   bool
	flags       map[string]string
	systemdFlag bool
	// holder keeps the scope prepareScope started until after() checked
	// the placement.
	holder Holder
}

func (w *work) sandbox() bool { return w.rec.ContainerType == cri.ContainerTypeSandbox }

func (w *work) before(ctx context.Context) error {
	cfg := w.fix.Config
	if w.rec.CgroupsPath == "" {
		// No pod cgroup to resolve or place into (kubelet without
		// cgroupsPerQOS): runsc's own defaults apply.
		w.rec.Warnings = append(w.rec.Warnings, "no linux.cgroupsPath: nothing to resolve or place")
		return nil
	}
	var err error
	if w.path, err = cgroupfix.ParseCgroupsPath(w.rec.CgroupsPath); err != nil {
		return fmt.Errorf("parse cgroupsPath of %s: %w", w.req.ID, err)
	}
	w.rec.Driver = w.path.Driver.String()
	w.rec.PodCgroup = w.path.Parent
	if w.h, err = w.fix.hierarchy(); err != nil {
		return err
	}

	if err := w.loadOptions(ctx); err != nil {
		return err
	}
	if w.sandbox() {
		res, err := cgroupfix.Resolve(w.h, cgroupfix.ResolveInput{
			CgroupsPath: w.rec.CgroupsPath, Spec: w.spec, Annotations: w.spec.Annotations,
			UseAnnotation: cfg.UseSandboxAnnotations,
		})
		if err != nil {
			return fmt.Errorf("resolve pod limit of %s: %w", w.req.ID, err)
		}
		w.rec.PodCgroup = res.PodCgroup
		if !res.PodCgroupExists() {
			return fmt.Errorf("%w: %s (kubelet makes it, with the pod's limit, before RunPodSandbox)", ErrNoPodCgroup, res.PodCgroup)
		}
		w.rec.Sources, w.rec.Annotation, w.rec.Effective = res.Sources, res.Annotation, res.Effective
		w.rec.Warnings = append(w.rec.Warnings, res.Warnings...)
		if w.rec.Effective.CPULimited() && w.optsKnown && cfg.AddRunscFlags &&
			w.fix.KnowsFlag(ctx, w.rec.Runsc, runsc.CPUNumFromQuotaKey) {
			w.flags[runsc.CPUNumFromQuotaKey] = "true"
		}
		if err := w.fixSpec(ctx); err != nil {
			return err
		}
		if err := w.fixLeaf(); err != nil {
			return err
		}
		if err := w.prepareScope(ctx); err != nil {
			return err
		}
	}
	return w.writeOptions()
}

// runscCgroupParent is the annotation runsc places a root container by
// instead of its cgroupsPath (runsc/container/container.go).
const runscCgroupParent = "dev.gvisor.spec.cgroup-parent"

// prepareScope makes runsc create the sandbox's cgroups inside the pod
// slice on a cgroup v1 node, where no runsc release can place a systemd
// cgroupsPath: runsc's v1 manager ignores --systemd-cgroup and takes
// "slice:prefix:name" for a directory below runsc's own cgroup,
// /system.slice/containerd.service (docs/upstream.md#v1). Only an
// absolute cgroupfs path lands where it says, in every v1 hierarchy.
//
// systemd owns the pod slice, so the guard does not make a directory
// there behind its back: it starts a transient scope
// runsc-guard-<id>.scope under the slice with Delegate=yes and the pod's
// memory limit, held by a holder process until runsc's processes are in
// it, and gives runsc the scope's directory as an absolute cgroupsPath.
// In the hierarchies systemd manages (memory, cpu, pids, ...) runsc finds
// the scope's cgroup and joins it; it creates and later removes the same
// path in the ones systemd leaves alone (cpuset, net_cls, ...), as runc's
// systemd driver does on v1. runsc sizes the sandbox from the scope's
// memory.limit_in_bytes. --systemd-cgroup, which would make a 2026 runsc
// refuse an absolute path, goes off for this container.
func (w *work) prepareScope(ctx context.Context) error {
	if w.h.Version != cgroupfix.V1 || w.path.Driver != cgroupfix.DriverSystemd || !w.optsKnown || w.fix.Hold == nil {
		return nil
	}
	if _, ok := w.spec.Annotations[runscCgroupParent]; ok {
		w.rec.Warnings = append(w.rec.Warnings, runscCgroupParent+" is set: runsc places the sandbox by it, the guard checks after Create")
		return nil
	}
	unit := cgroupfix.ScopeName(w.req.ID)
	h, err := w.fix.Hold()
	if err != nil {
		return fmt.Errorf("scope for %s: %w", w.req.ID, err)
	}
	w.holder = h
	err = w.withSystemd(ctx, unit, func(conn cgroupfix.Systemd) error {
		return cgroupfix.PrepareScope(ctx, conn, unit, filepath.Base(w.rec.PodCgroup), h.PID(), w.rec.Effective.MemoryBytes)
	})
	if err != nil {
		return fmt.Errorf("start %s under %s for %s: %w", unit, w.rec.PodCgroup, w.req.ID, err)
	}
	dir := w.rec.PodCgroup + "/" + unit
	if err := patchSpec(w.req.Bundle, func(e *specEdit) {
		e.set(e.obj(e.doc, "linux"), "cgroupsPath", dir)
	}); err != nil {
		return fmt.Errorf("give runsc the cgroupsPath %s: %w", dir, err)
	}
	w.rec.RunscCgroupsPath = dir
	if w.systemdFlag {
		w.flags[runsc.SystemdCgroupKey] = "false"
		w.systemdFlag = false
	}
	w.rec.Actions = append(w.rec.Actions, "scope")
	return nil
}

// tellSystemd puts every process runsc started in the prepared scope into
// that scope in a hybrid node's cgroup v2 hierarchy too, where systemd
// tracks a unit's processes (cgroupfix.JoinUnified), before the holder
// goes. Processes the sandbox forks later follow their parent. A failure
// leaves the limits holding (they are in the v1 hierarchies) but systemd
// stopping the scope early: a warning.
func (w *work) tellSystemd() {
	if w.rec.RunscCgroupsPath == "" {
		return
	}
	// Twice: a process forked while the first pass moved its parent
	// was born in the old cgroup.
	for range 2 {
		pids, err := cgroupfix.ProcsInCgroup(w.h, w.rec.RunscCgroupsPath)
		if err == nil {
			err = cgroupfix.JoinUnified(w.h, w.rec.RunscCgroupsPath, pids)
		}
		if err != nil {
			w.rec.Warnings = append(w.rec.Warnings, fmt.Sprintf("systemd may not see the sandbox in %s: %v", w.rec.RunscCgroupsPath, err))
			return
		}
	}
}

// releaseHolder lets the scope go once runsc's processes are in it (or
// Create failed): systemd stops a scope whose cgroup empties.
func (w *work) releaseHolder(ctx context.Context) {
	if w.holder == nil {
		return
	}
	if err := w.holder.Release(); err != nil {
		log.G(ctx).WithError(err).WithField("container_id", w.req.ID).Warn("release scope holder")
	}
	w.holder = nil
}

// fixSpec lowers the sandbox spec's resources to the effective limit, so
// that runsc sizes the sandbox by it (runsc applies the sandbox spec's
// resources to its cgroup before computing --total-memory).
func (w *work) fixSpec(ctx context.Context) error {
	w.rec.SpecLimitBefore = specMemory(w.spec)
	w.rec.SpecLimitAfter = w.rec.SpecLimitBefore
	want := w.rec.Effective
	if w.runscSizesRight(ctx) {
		want.MemoryBytes = 0 // nothing to add: runsc finds the limit itself
	}
	edited := *w.spec
	edited.Linux = cloneLinux(w.spec.Linux)
	if !cgroupfix.ApplyLimits(&edited, want) {
		return nil
	}
	if err := patchSpecResources(w.req.Bundle, edited.Linux.Resources); err != nil {
		return fmt.Errorf("write pod limit into %s: %w", w.req.Bundle, err)
	}
	w.spec = &edited
	w.rec.SpecLimitAfter = specMemory(&edited)
	w.rec.Actions = append(w.rec.Actions, "spec-limit")
	return nil
}

// fixLeaf makes an existing cgroupfs leaf carry the limit before runsc reads
// it: runsc applies the spec's resources only to a cgroup it created
// itself (docs/upstream.md#sizing).
func (w *work) fixLeaf() error {
	if w.path.Driver != cgroupfix.DriverCgroupfs || !w.rec.Effective.MemoryLimited() {
		return nil
	}
	leaf, err := w.h.MemoryDir(w.path.Dir)
	if err != nil {
		return fmt.Errorf("leaf cgroup of %s: %w", w.req.ID, err)
	}
	if _, err := os.Stat(leaf); err != nil {
		return nil // runsc creates it and applies the spec
	}
	cur, err := w.h.ReadLimits(w.path.Dir)
	if err != nil {
		return fmt.Errorf("read leaf cgroup of %s: %w", w.req.ID, err)
	}
	if cur.MemoryLimited() && cur.MemoryBytes <= w.rec.Effective.MemoryBytes {
		return nil
	}
	if err := cgroupfix.MoveToCgroupfs(w.h, w.path.Dir, nil, w.rec.Effective.MemoryBytes); err != nil {
		return fmt.Errorf("write limit into leaf cgroup of %s: %w", w.req.ID, err)
	}
	w.rec.LeafLimitWritten = true
	w.rec.Actions = append(w.rec.Actions, "leaf-limit")
	return nil
}

// loadOptions reads the container's runsc options and decides which runsc
// flags it needs: systemd-cgroup for a systemd cgroupsPath (without it old
// runsc puts the sandbox under system.slice,
// https://github.com/google/gvisor/issues/10264), when the runsc in use
// knows it. BeforeCreate adds cpu-num-from-quota for a sandbox with a CPU
// quota; writeOptions applies them.
func (w *work) loadOptions(ctx context.Context) error {
	w.flags = map[string]string{}
	opts, ok, err := decodeOptions(w.req.Options)
	if err != nil {
		return fmt.Errorf("runtime options of %s: %w", w.req.ID, err)
	}
	if !ok {
		return nil // options of a type the guard does not know: leave them
	}
	if opts.ConfigPath != "" {
		if w.optsBody, err = safefile.ReadFile(opts.ConfigPath, runsc.MaxOptionsSize+3); err != nil {
			return fmt.Errorf("read runsc options of %s: %w", w.req.ID, err)
		}
	}
	// An empty ConfigPath means the runsc shim runs with no options (it
	// ignores containerd 2.x's ConfigBody): start from nothing, not from
	// ConfigBody, so that the guard adds only its own flags.
	if w.rec.Runsc, err = runsc.Binary(w.optsBody); err != nil {
		return fmt.Errorf("runsc options %s of %s: %w", opts.ConfigPath, w.req.ID, err)
	}
	w.opts, w.optsKnown = opts, true
	if _, changed, err := runsc.EnableSystemdCgroup(w.optsBody); err == nil && !changed {
		w.systemdFlag = true // already on in the operator's options
	}
	if !w.fix.Config.AddRunscFlags || w.path.Driver != cgroupfix.DriverSystemd || w.systemdFlag {
		return nil
	}
	if w.h.Version == cgroupfix.V1 {
		return nil // runsc's v1 manager ignores it (prepareScope)
	}
	if w.fix.KnowsFlag(ctx, w.rec.Runsc, runsc.SystemdCgroupKey) {
		w.flags[runsc.SystemdCgroupKey] = "true"
		w.systemdFlag = true
	} else {
		w.rec.Warnings = append(w.rec.Warnings, fmt.Sprintf("%s does not know --%s: placement relies on the move", w.rec.Runsc, runsc.SystemdCgroupKey))
	}
	return nil
}

// writeOptions gives the container a copy of its runsc options with the
// flags loadOptions and BeforeCreate chose, kept in the bundle.
func (w *work) writeOptions() error {
	if !w.optsKnown || len(w.flags) == 0 {
		return nil
	}
	out, changed, err := runsc.SetFlags(w.optsBody, w.flags)
	if err != nil {
		return fmt.Errorf("runsc options %s of %s: %w", w.opts.ConfigPath, w.req.ID, err)
	}
	if len(changed) == 0 {
		return nil
	}
	path := filepath.Join(w.req.Bundle, optionsFile)
	if err := atomicfile.Replace(path, out, 0o600); err != nil {
		return err
	}
	opts := proto.Clone(w.opts).(*runtimeoptions.Options)
	opts.ConfigPath = path
	v, err := proto.Marshal(opts)
	if err != nil {
		return fmt.Errorf("encode runtime options of %s: %w", w.req.ID, err)
	}
	typeURL := runtimeOptionsTypeURL
	if w.req.Options != nil {
		typeURL = w.req.Options.TypeUrl
	}
	w.req.Options = &anypb.Any{TypeUrl: typeURL, Value: v}
	w.rec.RunscFlags = map[string]string{}
	for _, k := range changed {
		w.rec.RunscFlags[k] = w.flags[k]
	}
	w.rec.Actions = append(w.rec.Actions, "runsc-flag")
	return nil
}

// runscSizesRight reports whether runsc will boot the sandbox with the
// effective memory limit without the guard writing it into the spec: on
// cgroup v2 a runsc since release-20231106 reads the leaf's memory.max and,
// when that says max, its parent's
// (https://github.com/google/gvisor/issues/9580), so where the sandbox will
// sit in the pod cgroup and that read already gives the effective limit,
// the node is right and the guard leaves the spec alone. An unknown runsc
// release is never taken as right.
func (w *work) runscSizesRight(ctx context.Context) bool {
	if w.h.Version != cgroupfix.V2 || !w.rec.Effective.MemoryLimited() || w.rec.Runsc == "" {
		return false
	}
	rel := w.fix.Release(ctx, w.rec.Runsc)
	placed := w.path.Driver == cgroupfix.DriverCgroupfs || w.systemdFlag || rel >= runsc.ReleaseSystemdAuto
	if rel < runsc.ReleaseParentLimit || !placed {
		return false
	}
	reads, err := w.h.ReadLimits(w.path.Dir)
	if err != nil {
		return false
	}
	if !reads.MemoryLimited() {
		if reads, err = w.h.ReadLimits(filepath.Dir(w.path.Dir)); err != nil {
			return false
		}
	}
	return reads.MemoryBytes == w.rec.Effective.MemoryBytes
}

// decodeOptions returns the CRI runtime options of a Create; ok is false
// for options of another type. No options at all (ctr) is an empty set.
func decodeOptions(a *anypb.Any) (*runtimeoptions.Options, bool, error) {
	o := &runtimeoptions.Options{TypeUrl: "io.containerd.runsc.v1.options"}
	if a == nil {
		return o, true, nil
	}
	if !strings.HasSuffix(a.TypeUrl, runtimeOptionsTypeURL) {
		return nil, false, nil
	}
	o = &runtimeoptions.Options{}
	if err := proto.Unmarshal(a.Value, o); err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", a.TypeUrl, err)
	}
	return o, true, nil
}

// after checks where runsc put the container's processes and what it sized
// the sandbox with, moves misplaced processes under the pod cgroup, and
// records the outcome.
func (w *work) after(ctx context.Context, resp *taskAPI.CreateTaskResponse) error {
	if resp == nil {
		w.releaseHolder(ctx) // the runsc shim's Create failed
		return nil
	}
	// One pass over /proc for the sandbox and the gofers.
	scan, err := cgroupfix.ScanRunsc(w.fix.Config.ProcRoot)
	if err != nil {
		return w.fail(ctx, fmt.Errorf("find the runsc processes of %s: %w", w.req.ID, err))
	}
	var procs []cgroupfix.Proc
	if w.sandbox() {
		s, err := cgroupfix.SandboxOf(scan, w.req.ID)
		switch {
		case err != nil:
			w.rec.Warnings = append(w.rec.Warnings, fmt.Sprintf("sandbox process not found: %v", err))
		default:
			w.rec.SandboxPID, w.rec.TotalMemory, w.rec.CPUNum = s.PID, s.Sandbox.TotalMemory, s.Sandbox.CPUNum
			procs = append(procs, s.Proc)
		}
	}
	gofers, err := cgroupfix.GofersOf(scan, w.req.Bundle)
	if err != nil {
		return w.fail(ctx, fmt.Errorf("find gofers of %s: %w", w.req.ID, err))
	}
	procs = append(procs, gofers...)
	w.rec.PlacementBefore = procs
	name := w.req.ID
	if w.rec.RunscCgroupsPath != "" {
		name += "-moved" // runsc-guard-<id>.scope is prepareScope's, still held
	}
	after, err := w.place(ctx, procs, name)
	w.rec.PlacementAfter = after
	if err != nil {
		return w.fail(ctx, err)
	}
	w.tellSystemd()
	if w.sandbox() && w.rec.SandboxPID > 0 {
		for _, p := range append(after, procs...) { // after the move, else as found
			if p.PID == w.rec.SandboxPID {
				w.unpinCPUv1(p)
				break
			}
		}
	}
	if w.sandbox() && w.rec.Effective.MemoryLimited() && w.rec.TotalMemory > w.rec.Effective.MemoryBytes {
		// The kernel holds the pod to its limit (the sandbox is inside the
		// pod cgroup), but gVisor's MemTotal is wrong: a move cannot fix
		// --total-memory (docs/upstream.md#move).
		w.rec.Warnings = append(w.rec.Warnings, fmt.Sprintf("runsc booted with --total-memory=%d above the pod limit %d", w.rec.TotalMemory, w.rec.Effective.MemoryBytes))
	}
	w.finish(ctx)
	return nil
}

// AfterStart checks the gofers of a container the runsc shim started: old
// runsc starts an app container's gofer at start, not at create, and leaves
// it in the runsc shim's cgroup (system.slice/containerd.service), outside
// the pod (docs/upstream.md#placement). Misplaced gofers move into a scope of their own
// under the pod, as at Create. Containers the guard made no record for at
// Create (not CRI, no cgroupsPath) are left alone.
func (s *SandboxFix) AfterStart(ctx context.Context, id, bundle string) error {
	s.followMu.Lock()
	defer s.followMu.Unlock()
	rec, err := readRecordFile(bundle)
	if err != nil || rec.CgroupsPath == "" || rec.PodCgroup == "" {
		return nil
	}
	w := &work{fix: s, req: &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle}, rec: rec}
	if w.path, err = cgroupfix.ParseCgroupsPath(rec.CgroupsPath); err != nil {
		return nil
	}
	if w.h, err = s.hierarchy(); err != nil {
		return w.fail(ctx, err)
	}
	gofers, err := cgroupfix.FindGofers(s.Config.ProcRoot, bundle)
	if err != nil {
		return w.fail(ctx, fmt.Errorf("find gofers of %s after start: %w", id, err))
	}
	misplaced := outside(rec.PodCgroup, gofers)
	if len(misplaced) == 0 {
		return nil
	}
	rec.PlacementBefore = append(rec.PlacementBefore, misplaced...)
	after, err := w.place(ctx, misplaced, id+"-started")
	rec.PlacementAfter = append(rec.PlacementAfter, after...)
	if err != nil {
		return w.fail(ctx, err)
	}
	w.finish(ctx)
	return nil
}

// place moves those of procs outside the pod cgroup into the scope (or
// cgroupfs leaf) named for name, and returns where all of procs are
// afterwards: nil when none had to move or the move failed. A process
// still outside after the move is an error.
func (w *work) place(ctx context.Context, procs []cgroupfix.Proc, name string) ([]cgroupfix.Proc, error) {
	misplaced := outside(w.rec.PodCgroup, procs)
	if len(misplaced) == 0 {
		return nil, nil
	}
	if err := w.move(ctx, misplaced, name); err != nil {
		return nil, err
	}
	after, err := w.recheck(procs)
	if err != nil {
		return nil, err
	}
	if still := outside(w.rec.PodCgroup, after); len(still) > 0 {
		return after, fmt.Errorf("%s still in %s after the move", describe(still), still[0].Cgroup)
	}
	return after, nil
}

// outside returns the processes not under the pod cgroup.
func outside(pod string, procs []cgroupfix.Proc) []cgroupfix.Proc {
	var out []cgroupfix.Proc
	for _, p := range procs {
		if !p.InPod(pod) {
			out = append(out, p)
		}
	}
	return out
}

func describe(procs []cgroupfix.Proc) string {
	parts := make([]string, len(procs))
	for i, p := range procs {
		parts[i] = fmt.Sprintf("%s[%d]", p.Argv0, p.PID)
	}
	return strings.Join(parts, ", ")
}

// movePIDs returns the pids to move for misplaced runsc processes. A
// cgroup runsc made for this container (its name holds the container id)
// is moved whole: runsc forks helper processes there that carry the
// workload's memory, and leaving them behind lets the workload escape
// (docs/upstream.md#move). From a shared cgroup (containerd.service, where old
// runsc leaves app-container gofers) only the runsc processes move.
func (w *work) movePIDs(misplaced []cgroupfix.Proc) ([]int, error) {
	seen := map[int]bool{}
	var pids []int
	add := func(pid int) {
		if !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	for _, p := range misplaced {
		if strings.Contains(filepath.Base(p.Cgroup), w.req.ID) {
			all, err := cgroupfix.ProcsInCgroup(w.h, p.Cgroup)
			if err != nil {
				return nil, fmt.Errorf("list processes of %s: %w", p.Cgroup, err)
			}
			for _, pid := range all {
				add(pid)
			}
		}
		add(p.PID)
	}
	return pids, nil
}

// move puts misplaced processes under the pod cgroup: into a transient
// systemd scope under the pod slice, or a cgroupfs leaf under the pod
// cgroup, carrying the pod limit for the sandbox.
func (w *work) move(ctx context.Context, misplaced []cgroupfix.Proc, name string) error {
	pids, err := w.movePIDs(misplaced)
	if err != nil {
		return err
	}
	limit := uint64(0)
	if w.sandbox() {
		limit = w.rec.Effective.MemoryBytes
	}
	w.rec.Actions = append(w.rec.Actions, "move")
	if w.path.Driver == cgroupfix.DriverSystemd {
		unit := cgroupfix.ScopeName(name)
		if err := w.moveToScope(ctx, unit, pids, limit); err != nil {
			return fmt.Errorf("move %s into %s/%s: %w", describe(misplaced), w.rec.PodCgroup, unit, err)
		}
		return nil
	}
	dir := filepath.Join(w.rec.PodCgroup, strings.TrimSuffix(cgroupfix.ScopeName(name), ".scope"))
	if err := cgroupfix.MoveToCgroupfs(w.h, dir, pids, limit); err != nil {
		return fmt.Errorf("move %s into %s: %w", describe(misplaced), dir, err)
	}
	return nil
}

// dbusAttempts: a move whose D-Bus connection broke (systemd re-executed,
// the bus dropped the guard) is tried once more on a new connection.
const dbusAttempts = 2

func (w *work) moveToScope(ctx context.Context, unit string, pids []int, limit uint64) error {
	return w.withSystemd(ctx, unit, func(conn cgroupfix.Systemd) error {
		return cgroupfix.MoveToScope(ctx, conn, unit, filepath.Base(w.rec.PodCgroup), pids, limit)
	})
}

// withSystemd runs call on a new systemd D-Bus connection, once more on
// another when the connection broke.
func (w *work) withSystemd(ctx context.Context, unit string, call func(cgroupfix.Systemd) error) error {
	var err error
	for i := 0; i < dbusAttempts; i++ {
		var conn cgroupfix.Systemd
		var closeConn func()
		conn, closeConn, err = w.fix.Systemd(ctx)
		if err != nil {
			continue
		}
		err = call(conn)
		closeConn()
		if !cgroupfix.Retriable(err) || ctx.Err() != nil {
			return err
		}
		log.G(ctx).WithError(err).WithField("unit", unit).Warn("systemd D-Bus connection failed, retrying")
	}
	return err
}

// recheck reads the cgroups of procs again.
func (w *work) recheck(procs []cgroupfix.Proc) ([]cgroupfix.Proc, error) {
	out := make([]cgroupfix.Proc, 0, len(procs))
	for _, p := range procs {
		cg, others, err := cgroupfix.ProcCgroups(w.fix.Config.ProcRoot, p.PID)
		if err != nil {
			return nil, fmt.Errorf("cgroup of %s[%d] after the move: %w", p.Argv0, p.PID, err)
		}
		p.Cgroup, p.Controllers = cg, others
		out = append(out, p)
	}
	return out, nil
}

// fail applies the policy to a limit the guard could not make hold: under
// enforce it returns the error (the Create fails, the router removes what
// runsc created); under warn it logs and lets the container run.
func (w *work) fail(ctx context.Context, err error) error {
	w.rec.Error = err.Error()
	if w.fix.Config.Policy == config.PolicyWarn {
		w.rec.Outcome = "warn"
		w.finish(ctx)
		return nil
	}
	w.rec.Outcome = "refused"
	w.finish(ctx)
	return fmt.Errorf("%w: pod %s/%s (uid %s) container %s, pod cgroup %s, limit %d bytes, runsc --total-memory %d: %w",
		ErrLimitNotEffective, w.rec.PodNamespace, w.rec.PodName, w.rec.PodUID, w.req.ID,
		w.rec.PodCgroup, w.rec.Effective.MemoryBytes, w.rec.TotalMemory, err)
}

// finish logs the decision once and writes it next to the bundle.
func (w *work) finish(ctx context.Context) {
	w.releaseHolder(ctx)
	r := w.rec
	placement := "in-pod"
	switch {
	case r.Outcome == "refused" || r.Outcome == "warn":
		placement = "unfixed"
	case len(r.PlacementAfter) > 0:
		placement = "moved"
	}
	l := log.G(ctx).WithFields(log.Fields{
		"container_id": r.ContainerID, "container_type": r.ContainerType,
		"pod": r.PodNamespace + "/" + r.PodName, "pod_uid": r.PodUID,
		"pod_cgroup": r.PodCgroup, "memory_limit": r.Effective.MemoryBytes,
		"spec_limit_before": r.SpecLimitBefore, "total_memory": r.TotalMemory, "cpu_num": r.CPUNum,
		"placement": placement, "actions": strings.Join(r.Actions, ","), "outcome": r.Outcome,
	})
	if len(r.Warnings) > 0 {
		l = l.WithField("warnings", strings.Join(r.Warnings, "; "))
	}
	if r.Error != "" {
		l = l.WithField("error", r.Error)
	}
	switch r.Outcome {
	case "ok":
		l.Info("gvisor sandbox decision")
	default:
		l.Warn("gvisor sandbox decision")
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = atomicfile.Replace(filepath.Join(w.req.Bundle, cgroupfix.RecordFile), append(b, '\n'), 0o644)
	}
	if err != nil {
		l.WithError(err).Warn("write decision record")
	}
}

func specMemory(s *specs.Spec) uint64 {
	if s == nil || s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Memory == nil ||
		s.Linux.Resources.Memory.Limit == nil || *s.Linux.Resources.Memory.Limit <= 0 {
		return 0
	}
	return uint64(*s.Linux.Resources.Memory.Limit)
}

// cloneLinux copies the parts of spec.Linux that ApplyLimits edits.
func cloneLinux(l *specs.Linux) *specs.Linux {
	if l == nil {
		return nil
	}
	c := *l
	if l.Resources != nil {
		r := *l.Resources
		if l.Resources.Memory != nil {
			m := *l.Resources.Memory
			r.Memory = &m
		}
		if l.Resources.CPU != nil {
			cpu := *l.Resources.CPU
			r.CPU = &cpu
		}
		c.Resources = &r
	}
	return &c
}

// ErrFoldedKey: a spec key that a JSON decoder takes for one the guard
// writes, though it is spelled otherwise.
var ErrFoldedKey = errors.New("spec key folds to one the guard writes")

// foldedTwin finds a key of m other than k that Go's JSON decoder would
// match to the field k.
func foldedTwin(m map[string]any, k string) error {
	for key := range m {
		if key != k && strings.EqualFold(key, k) {
			return fmt.Errorf("%w: %q is read as %q", ErrFoldedKey, key, k)
		}
	}
	return nil
}

// patchSpecResources writes the memory limit and CPU quota/period of res
// into the bundle's config.json.
func patchSpecResources(bundle string, res *specs.LinuxResources) error {
	return patchSpec(bundle, func(e *specEdit) {
		r := e.obj(e.obj(e.doc, "linux"), "resources")
		if res.Memory != nil && res.Memory.Limit != nil {
			e.set(e.obj(r, "memory"), "limit", *res.Memory.Limit)
		}
		if res.CPU != nil && res.CPU.Quota != nil {
			cpu := e.obj(r, "cpu")
			e.set(cpu, "quota", *res.CPU.Quota)
			if res.CPU.Period != nil {
				e.set(cpu, "period", *res.CPU.Period)
			}
		}
	})
}

// specEdit is config.json as a JSON document being edited.
type specEdit struct {
	path   string
	doc    map[string]any
	folded error
}

// obj returns the object under key k of m, adding an empty one if there
// is none.
func (e *specEdit) obj(m map[string]any, k string) map[string]any {
	e.checkFolded(m, k)
	if v, ok := m[k].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[k] = v
	return v
}

// set sets key k of m.
func (e *specEdit) set(m map[string]any, k string, v any) {
	e.checkFolded(m, k)
	m[k] = v
}

// checkFolded: Go's JSON decoder, which runsc uses, matches object keys
// to spec fields case-insensitively (with Unicode folding: "reſources" is
// "resources") and takes the last match in the document. A key that folds
// to one the guard writes would be read by runsc instead of, or after, the
// guard's: the spec is refused rather than written with a value runsc does
// not read.
func (e *specEdit) checkFolded(m map[string]any, k string) {
	if err := foldedTwin(m, k); err != nil && e.folded == nil {
		e.folded = fmt.Errorf("%s: %w", e.path, err)
	}
}

// patchSpec applies edit to the bundle's config.json, editing the JSON
// document in place so that fields this build of runtime-spec does not
// know survive.
func patchSpec(bundle string, edit func(*specEdit)) error {
	p := filepath.Join(bundle, "config.json")
	b, err := safefile.ReadFile(p, ocispec.MaxSize)
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	// UseNumber: uids, limits and other 64-bit values must not go
	// through float64.
	e := &specEdit{path: p}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&e.doc); err != nil {
		return fmt.Errorf("parse %s: %w", p, err)
	}
	if e.doc == nil {
		return fmt.Errorf("parse %s: not a JSON object", p)
	}
	edit(e)
	if e.folded != nil {
		return e.folded
	}
	out, err := json.Marshal(e.doc)
	if err != nil {
		return fmt.Errorf("encode %s: %w", p, err)
	}
	return atomicfile.Replace(p, out, 0o600)
}
