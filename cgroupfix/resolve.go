package cgroupfix

import (
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"path"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// PodCgroupExists reports whether the pod cgroup was there when Resolve
// read the path: it is then one of the Sources.
func (r Resolution) PodCgroupExists() bool {
	for _, s := range r.Sources {
		if s.Kind == KindCgroup && s.Path == r.PodCgroup {
			return true
		}
	}
	return false
}

// annotationSourcePath names the annotation Source.
const annotationSourcePath = "io.kubernetes.cri.sandbox-*"

// specSourcePath names the spec Source.
const specSourcePath = "linux.resources"

// ResolveInput is what Resolve needs to know about a sandbox container.
type ResolveInput struct {
	// CgroupsPath is the spec's linux.cgroupsPath.
	CgroupsPath string
	// Spec is the sandbox container's OCI spec; it may be nil.
	Spec *specs.Spec
	// Annotations are the sandbox container's annotations; may be nil.
	Annotations map[string]string
	// UseAnnotation lets the CRI sandbox-* annotations limit the sandbox,
	// but only for a resource no cgroup on the path limits (pods without
	// a cgroup of their own: kubelet cgroupsPerQOS=false). Operator opt-in.
	UseAnnotation bool
}

// Resolution is the outcome of Resolve.
type Resolution struct {
	// Path is the parsed cgroupsPath.
	Path CgroupsPath
	// PodCgroup is the pod's cgroup directory relative to the root
	// (Path.Parent).
	PodCgroup string
	// Sources lists, leaf first, every cgroup directory on the path that
	// exists (with its limits, unlimited ones included), then the spec's
	// limits if it has any, then the annotations if they were applied.
	Sources []Source
	// Effective is the minimum of the finite limits in Sources.
	Effective Limits
	// Annotation holds the valid CRI sandbox-* annotation values, applied
	// or not; nil when there were none.
	Annotation *Limits
	// Warnings are human-readable notes: junk annotations, and
	// annotations that disagree with the cgroup limit.
	Warnings []string
}

// Resolve computes the limits the kernel would enforce on a sandbox placed
// where its cgroupsPath says: the minimum over the leaf cgroup, every
// ancestor up to the root, and the spec's linux.resources. Directories
// that do not exist are skipped; the leaf normally does not exist yet at
// Create. The result never exceeds any finite cgroup or spec limit.
//
// It reads the cgroups of the intended path, not where an old runsc would
// put the sandbox (system.slice/<slice>:<prefix>:<name>, see
// https://github.com/google/gvisor/issues/10264), and every ancestor, not
// only the leaf and its parent as runsc does since release-20231106.0
// (https://github.com/google/gvisor/issues/9580).
//
// A path that does not parse, escapes the root, or a limit file that
// exists but does not parse is an error: a limit we cannot read is one we
// cannot promise to keep. Junk annotations are only warnings.
func Resolve(h Hierarchy, in ResolveInput) (Resolution, error) {
	cp, err := ParseCgroupsPath(in.CgroupsPath)
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve limits: %w", err)
	}
	res := Resolution{Path: cp, PodCgroup: cp.Parent}

	b, done, err := h.bases()
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve limits of %s: %w", cp.Raw, err)
	}
	defer done()
	buf := make([]byte, 0, limitBufSize)

	var cgroupEff Limits
	var memFrom, cpuFrom string
	for d := cp.Dir; ; d = path.Dir(d) {
		l, exists, err := h.readLimits(b, d, buf)
		if err != nil {
			return Resolution{}, fmt.Errorf("resolve limits of %s: %w", cp.Raw, err)
		}
		if exists {
			res.Sources = append(res.Sources, Source{Kind: KindCgroup, Path: d, Limits: l})
			if minMemory(&cgroupEff, l) {
				memFrom = d
			}
			if minCPU(&cgroupEff, l) {
				cpuFrom = d
			}
		}
		if d == "/" {
			break
		}
	}
	eff := cgroupEff

	if sl, ok := specLimits(in.Spec); ok {
		res.Sources = append(res.Sources, Source{Kind: KindSpec, Path: specSourcePath, Limits: sl})
		minMemory(&eff, sl)
		minCPU(&eff, sl)
	}

	ann, warns := annotationLimits(in.Annotations)
	res.Warnings = append(res.Warnings, warns...)
	if ann != nil {
		res.Annotation = ann
		var used Limits
		if ann.MemoryLimited() {
			switch {
			case cgroupEff.MemoryLimited():
				if ann.MemoryBytes != cgroupEff.MemoryBytes {
					res.Warnings = append(res.Warnings, fmt.Sprintf(
						"annotation %s=%d disagrees with the cgroup memory limit %d of %s (the annotation sums declared container limits and excludes pod overhead); using the cgroup limit",
						cri.SandboxMemory, ann.MemoryBytes, cgroupEff.MemoryBytes, memFrom))
				}
			case in.UseAnnotation:
				used.MemoryBytes = ann.MemoryBytes
			default:
				res.Warnings = append(res.Warnings, fmt.Sprintf(
					"annotation %s=%d but no cgroup on %s limits memory; annotation not applied (not enabled)",
					cri.SandboxMemory, ann.MemoryBytes, cp.Dir))
			}
		}
		if ann.CPULimited() {
			switch {
			case cgroupEff.CPULimited():
				if cpuLess(*ann, cgroupEff) || cpuLess(cgroupEff, *ann) {
					res.Warnings = append(res.Warnings, fmt.Sprintf(
						"annotations %s=%d %s=%d disagree with the cgroup CPU limit %d/%d of %s; using the cgroup limit",
						cri.SandboxCPUQuota, ann.CPUQuota, cri.SandboxCPUPeriod, ann.CPUPeriod,
						cgroupEff.CPUQuota, cgroupEff.period(), cpuFrom))
				}
			case in.UseAnnotation:
				used.CPUQuota, used.CPUPeriod = ann.CPUQuota, ann.CPUPeriod
			default:
				res.Warnings = append(res.Warnings, fmt.Sprintf(
					"annotation %s=%d but no cgroup on %s limits CPU; annotation not applied (not enabled)",
					cri.SandboxCPUQuota, ann.CPUQuota, cp.Dir))
			}
		}
		if used.MemoryLimited() || used.CPULimited() {
			res.Sources = append(res.Sources, Source{Kind: KindAnnotation, Path: annotationSourcePath, Limits: used})
			minMemory(&eff, used)
			minCPU(&eff, used)
		}
	}
	res.Effective = eff
	return res, nil
}

// minMemory lowers dst's memory limit to l's if l is finite and lower,
// and reports whether it did.
func minMemory(dst *Limits, l Limits) bool {
	if l.MemoryLimited() && (!dst.MemoryLimited() || l.MemoryBytes < dst.MemoryBytes) {
		dst.MemoryBytes = l.MemoryBytes
		return true
	}
	return false
}

// minCPU lowers dst's CPU quota/period to l's if l's ratio is lower, and
// reports whether it did.
func minCPU(dst *Limits, l Limits) bool {
	if cpuLess(l, *dst) {
		dst.CPUQuota, dst.CPUPeriod = l.CPUQuota, l.CPUPeriod
		return true
	}
	return false
}

// specLimits extracts the finite limits in spec.Linux.Resources.
func specLimits(spec *specs.Spec) (Limits, bool) {
	if spec == nil || spec.Linux == nil || spec.Linux.Resources == nil {
		return Limits{}, false
	}
	var l Limits
	r := spec.Linux.Resources
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		l.MemoryBytes = uint64(*r.Memory.Limit)
	}
	if r.CPU != nil && r.CPU.Quota != nil && *r.CPU.Quota > 0 {
		l.CPUQuota = *r.CPU.Quota
		if r.CPU.Period != nil {
			l.CPUPeriod = *r.CPU.Period
		}
	}
	return l, l.MemoryLimited() || l.CPULimited()
}

// annotationLimits parses the CRI sandbox-* annotations. Values that are
// not integers, or negative where that makes no sense, are reported as
// warnings and ignored. It returns nil when no annotation carries a limit.
func annotationLimits(ann map[string]string) (*Limits, []string) {
	var l Limits
	var warns []string
	junk := func(k, v, why string) {
		if len(v) > maxErrValue {
			v = v[:maxErrValue] + "..."
		}
		warns = append(warns, fmt.Sprintf("annotation %s=%q ignored: %s", k, v, why))
	}
	if v, ok := ann[cri.SandboxMemory]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case err != nil:
			junk(cri.SandboxMemory, v, "not an integer")
		case n < 0:
			junk(cri.SandboxMemory, v, "negative")
		case uint64(n) >= memoryUnlimitedThreshold:
			// As large as "unlimited": nothing to apply.
		default:
			l.MemoryBytes = uint64(n) // 0: no limit declared
		}
	}
	var quota int64
	if v, ok := ann[cri.SandboxCPUQuota]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			junk(cri.SandboxCPUQuota, v, "not an integer")
		} else {
			quota = n // <= 0: no limit (containerd writes 0 or -1)
		}
	}
	var period uint64
	if v, ok := ann[cri.SandboxCPUPeriod]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case err != nil:
			junk(cri.SandboxCPUPeriod, v, "not an integer")
			quota = 0 // a quota without a trustworthy period means nothing
		case n < 0:
			junk(cri.SandboxCPUPeriod, v, "negative")
			quota = 0
		default:
			period = uint64(n)
		}
	}
	if quota > 0 {
		l.CPUQuota, l.CPUPeriod = quota, period
	}
	if !l.MemoryLimited() && !l.CPULimited() {
		return nil, warns
	}
	return &l, warns
}
