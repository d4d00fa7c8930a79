package cgroupfix

import (
	"math"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ApplyLimits lowers the sandbox spec's linux.resources to eff: it sets
// memory.limit when the spec has none or a higher one, and CPU quota and
// period when the spec has no quota or a higher quota/period ratio. It
// never raises a value already lower, and reports whether it changed
// anything, so applying it twice changes nothing the second time and a
// node whose spec is already right is left alone.
//
// runsc applies the sandbox container's resources to the sandbox cgroup
// before it sizes the sandbox from that cgroup, so this makes
// --total-memory follow the pod even on a runsc that reads only the leaf
// (https://github.com/google/gvisor/issues/9580) or places the sandbox
// outside the pod slice (https://github.com/google/gvisor/issues/10264).
func ApplyLimits(spec *specs.Spec, eff Limits) (changed bool) {
	if spec == nil || (!eff.MemoryLimited() && !eff.CPULimited()) {
		return false
	}
	cur, _ := specLimits(spec)
	if eff.MemoryLimited() && (!cur.MemoryLimited() || eff.MemoryBytes < cur.MemoryBytes) && eff.MemoryBytes <= math.MaxInt64 {
		r := resources(spec)
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		v := int64(eff.MemoryBytes)
		r.Memory.Limit = &v
		changed = true
	}
	if cpuLess(eff, cur) {
		r := resources(spec)
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		q, p := eff.CPUQuota, eff.period()
		r.CPU.Quota = &q
		r.CPU.Period = &p
		changed = true
	}
	return changed
}

func resources(spec *specs.Spec) *specs.LinuxResources {
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	return spec.Linux.Resources
}
