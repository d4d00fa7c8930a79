package sandboxfix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/log"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
)

// Follow makes the cgroups below each pod's cgroup that hold its sandbox
// carry the pod's current limits, after kubelet resized the pod in place
// (KEP-1287: kubelet writes the pod cgroup before UpdateContainerResources
// of the app containers on a raise and after it on a cut, never updates
// the sandbox, and containerd's UpdatePodSandboxResources reaches no shim:
// docs/upstream.md#resize).
//
// The guard pinned the pod's limit below the pod cgroup at Create: in the
// sandbox spec, which runsc applies to the sandbox's own cgroup, or on the
// scope a move made. Those cgroups would keep the old limit, and the pod
// be killed at it after a raise. Follow gives every such cgroup that holds
// a finite limit other than the pod's the pod's own (raised or lowered,
// unlimited when the pod no longer has one): never tighter or looser
// than the pod. Cgroups without a limit are left alone, the pod's holds
// them. It writes through systemd for a unit's cgroup (so a daemon-reload
// keeps it), else the cgroup files; it never depends on runsc, whose own
// update may fail (Debian's runsc refuses the 2026 shim's `runsc update`).
//
// What cannot follow is recorded: gVisor keeps the --total-memory and CPU
// count it booted with (google/gvisor#14409, #14141); each resize is
// logged and appended to the sandbox's record, which audit compares.
//
// containers maps container ids to bundles, of any container of the pods
// (an Update names an app container); each pod's sandbox is followed once.
// Follow never fails a call: a limit it could not write is logged and
// recorded, and the pod cgroup above still holds the pod to its limit.
func (s *SandboxFix) Follow(ctx context.Context, containers map[string]string) {
	// Under followMu from the first record read: AfterStart writes the
	// same records.
	s.followMu.Lock()
	defer s.followMu.Unlock()
	done := map[string]bool{}
	for id, bundle := range containers {
		rec, err := readRecordFile(bundle)
		if err != nil {
			continue // no record: not a container the guard fixed
		}
		sb := bundle
		switch {
		case rec.ContainerType == cri.ContainerTypeSandbox:
		case rec.ContainerType == cri.ContainerTypeContainer && validSibling(rec.SandboxID) && rec.SandboxID != id:
			// An app container: its sandbox's bundle is its sibling.
			sb, rec = filepath.Join(filepath.Dir(bundle), rec.SandboxID), nil
		default:
			continue
		}
		if done[sb] {
			continue
		}
		done[sb] = true
		s.follow(ctx, sb, rec)
	}
}

// validSibling: a container id that names a directory beside a bundle.
func validSibling(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00")
}

func readRecordFile(bundle string) (*cgroupfix.Record, error) {
	b, err := safefile.ReadFile(filepath.Join(bundle, cgroupfix.RecordFile), cgroupfix.MaxRecordSize)
	if err != nil {
		return nil, err
	}
	rec := &cgroupfix.Record{}
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("%s: %w", cgroupfix.RecordFile, err)
	}
	return rec, nil
}

// follow follows one sandbox (under followMu); rec is its record when
// Follow read it already, else nil.
func (s *SandboxFix) follow(ctx context.Context, bundle string, rec *cgroupfix.Record) {
	var err error
	if rec == nil {
		if rec, err = readRecordFile(bundle); err != nil {
			return
		}
	}
	if rec.ContainerType != cri.ContainerTypeSandbox || rec.PodCgroup == "" || rec.Outcome == "refused" {
		return
	}
	l := log.G(ctx).WithFields(log.Fields{"container_id": rec.ContainerID, "pod": rec.PodNamespace + "/" + rec.PodName, "pod_cgroup": rec.PodCgroup})
	h, err := s.hierarchy()
	if err != nil {
		l.WithError(err).Warn("follow the pod's limits")
		return
	}
	cur, err := cgroupfix.PodLimits(h, rec.PodCgroup)
	if err != nil {
		// The pod is being torn down (its cgroup is gone) or cannot be
		// read: nothing to follow now.
		l.WithError(err).Debug("follow the pod's limits")
		return
	}
	cur = keepAnnotated(rec, cur)
	last := rec.Effective
	if rec.Current != nil {
		last = *rec.Current
	}
	resized := !cgroupfix.SameMemory(last, cur) || !cgroupfix.SameCPU(last, cur)
	lastErr := ""
	if n := len(rec.Follows); n > 0 {
		lastErr = rec.Follows[n-1].Error
	}
	if !resized && lastErr == "" {
		return // nothing changed since the last look (the common case)
	}
	w := &work{fix: s, rec: rec}
	if w.path, err = cgroupfix.ParseCgroupsPath(rec.CgroupsPath); err != nil {
		return
	}
	w.h = h
	f := cgroupfix.Follow{Time: s.Now().UTC(), From: last, To: cur, TotalMemory: rec.TotalMemory}
	written, err := w.followCgroups(ctx, cur)
	f.Written = written
	if err != nil {
		f.Error = err.Error()
	}
	if !resized && len(written) == 0 && f.Error == lastErr {
		return // a retry that failed the same way: recorded and logged already
	}
	rec.Current = &cur
	rec.Follows = append(rec.Follows, f)
	if n := len(rec.Follows); n > cgroupfix.MaxFollows {
		rec.Follows = rec.Follows[n-cgroupfix.MaxFollows:]
	}
	l = l.WithFields(log.Fields{
		"memory_limit_before": last.MemoryBytes, "memory_limit": cur.MemoryBytes,
		"cpu_quota_before": last.CPUQuota, "cpu_quota": cur.CPUQuota, "cpu_period": cur.CPUPeriod,
		"total_memory": rec.TotalMemory, "cpu_num": rec.CPUNum, "written": strings.Join(written, ","),
	})
	if rec.TotalMemory > 0 && cur.MemoryBytes != rec.TotalMemory {
		l = l.WithField("note", "gVisor keeps the --total-memory and CPU count it booted with (google/gvisor#14409): the pod's cgroup holds the new limit")
	}
	if err != nil {
		l.WithError(err).Warn("gvisor sandbox resize followed in part")
	} else {
		l.Info("gvisor sandbox resize followed")
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = atomicfile.Replace(filepath.Join(bundle, cgroupfix.RecordFile), append(b, '\n'), 0o644)
	}
	if err != nil {
		l.WithError(err).Warn("write decision record")
	}
}

// keepAnnotated keeps a limit the guard took from the CRI annotations at
// Create (use_sandbox_annotations, a pod without a cgroup limit): no
// cgroup carries it, so there is nothing a resize changes that the guard
// could read.
func keepAnnotated(rec *cgroupfix.Record, cur cgroupfix.Limits) cgroupfix.Limits {
	for _, src := range rec.Sources {
		if src.Kind != cgroupfix.KindAnnotation {
			continue
		}
		if src.Limits.MemoryLimited() && !cur.MemoryLimited() {
			cur.MemoryBytes = rec.Effective.MemoryBytes
		}
		if src.Limits.CPULimited() && !cur.CPULimited() {
			cur.CPUQuota, cur.CPUPeriod = rec.Effective.CPUQuota, rec.Effective.CPUPeriod
		}
	}
	return cur
}

// followCgroups gives the pod's limits cur to each cgroup between the
// sandbox process and the pod cgroup that holds another finite limit, and
// returns what it wrote. Raises go from the top down and cuts from the
// bottom up, so that no cgroup sits above its parent on the way.
//
// On cgroup v1 a CPU quota below the pod only ever goes (unlimited): v1
// refuses a cgroup a quota below one of its children's
// (docs/upstream.md#resize), so a child keeping a quota would make
// kubelet's later cut of the pod fail for good; the pod's quota holds the
// sandbox.
func (w *work) followCgroups(ctx context.Context, cur cgroupfix.Limits) ([]string, error) {
	scan, err := cgroupfix.ScanRunsc(w.fix.Config.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("find the sandbox process: %w", err)
	}
	sb, err := cgroupfix.SandboxOf(scan, w.rec.ContainerID)
	if err != nil {
		return nil, nil // the sandbox is gone: nothing holds a limit
	}
	type change struct {
		dir string
		mem bool // the memory limit, else the CPU quota
	}
	var raises, cuts []change
	add := func(c change, raise bool) {
		if raise {
			raises = append(raises, c)
		} else {
			cuts = append([]change{c}, cuts...) // bottom up
		}
	}
	memDirs := cgroupfix.Below(w.rec.PodCgroup, sb.Cgroup)
	for i := len(memDirs) - 1; i >= 0; i-- { // top down
		have, err := w.h.ReadLimits(memDirs[i])
		if err != nil {
			return nil, err
		}
		if have.MemoryLimited() && !cgroupfix.SameMemory(have, cur) {
			add(change{memDirs[i], true}, !cur.MemoryLimited() || cur.MemoryBytes > have.MemoryBytes)
		}
	}
	cpuWant := cur
	if w.h.Version == cgroupfix.V1 {
		cpuWant = cgroupfix.Limits{}
	}
	cpuDirs := cgroupfix.Below(w.rec.PodCgroup, cpuCgroup(w.h, sb.Proc))
	for i := len(cpuDirs) - 1; i >= 0; i-- {
		have, err := w.h.ReadLimits(cpuDirs[i])
		if err != nil {
			return nil, err
		}
		if have.CPULimited() && !cgroupfix.SameCPU(have, cpuWant) {
			add(change{cpuDirs[i], false}, !cpuWant.CPULimited() || cpuWant.CPUs() > have.CPUs())
		}
	}
	var written []string
	var errs []error
	for _, c := range append(raises, cuts...) {
		what, l := "cpu", cpuWant
		if c.mem {
			what, l = "memory", cur
		}
		how, err := w.writeLimits(ctx, c.dir, l, c.mem, !c.mem)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		written = append(written, c.dir+" "+what+" "+how)
	}
	return written, errors.Join(errs...)
}

// cpuCgroup is p's cgroup in the hierarchy of the CPU quota: on v1 the
// cpu controller's (which may differ from the memory one), else Cgroup.
func cpuCgroup(h cgroupfix.Hierarchy, p cgroupfix.Proc) string {
	if cg, ok := p.Controllers["cpu"]; ok && h.Version == cgroupfix.V1 {
		return cg
	}
	return p.Cgroup
}

// unpinCPUv1 lifts, on cgroup v1, the CPU quota runsc applied from the spec
// to the sandbox's cgroups below the pod, once runsc booted the sandbox
// (its CPU count is fixed): see followCgroups. A failure is a warning: the
// pod's quota still holds; only a later cut of it could fail.
func (w *work) unpinCPUv1(p cgroupfix.Proc) {
	if w.h.Version != cgroupfix.V1 || !w.rec.Effective.CPULimited() {
		return
	}
	for _, d := range cgroupfix.Below(w.rec.PodCgroup, cpuCgroup(w.h, p)) {
		have, err := w.h.ReadLimits(d)
		if err == nil && have.CPULimited() {
			err = w.h.WriteCPU(d, cgroupfix.Limits{})
		}
		if err != nil {
			w.rec.Warnings = append(w.rec.Warnings, fmt.Sprintf("CPU quota of %s kept (cgroup v1 then refuses a lower quota on the pod): %v", d, err))
		}
	}
}

// writeLimits gives the cgroup dir the memory and/or CPU limit of l:
// through systemd when dir is a unit's cgroup on a systemd node, checked by
// reading it back, else (or when systemd did not write it) in its files.
func (w *work) writeLimits(ctx context.Context, dir string, l cgroupfix.Limits, mem, cpu bool) (string, error) {
	if unit := cgroupfix.UnitOf(dir); unit != "" && w.path.Driver == cgroupfix.DriverSystemd && w.fix.Systemd != nil {
		err := w.withSystemd(ctx, unit, func(conn cgroupfix.Systemd) error {
			return cgroupfix.SetUnitLimits(ctx, conn, unit, l, mem, cpu)
		})
		if err == nil {
			got, rerr := w.h.ReadLimits(dir)
			if rerr == nil && (!mem || cgroupfix.SameMemory(got, l)) && (!cpu || cgroupfix.SameCPU(got, cgroupfix.SystemdCPU(l))) {
				return "systemd", nil
			}
		}
		log.G(ctx).WithError(err).WithField("unit", unit).Warn("systemd did not set the pod's new limit on the unit: writing its cgroup files")
	}
	if mem {
		if err := w.h.WriteMemory(dir, l.MemoryBytes); err != nil {
			return "", err
		}
	}
	if cpu {
		if err := w.h.WriteCPU(dir, l); err != nil {
			return "", err
		}
	}
	return "file", nil
}
