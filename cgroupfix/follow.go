package cgroupfix

import (
	"context"
	"fmt"
	"math"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// PodLimits returns the limits the kernel holds everything in the cgroup
// dir (a pod cgroup, relative to h.Root) to now: the minimum of the finite
// limits of dir and of each ancestor up to the root. It is what a cgroup
// below the pod may carry without being tighter or looser than the pod.
// A missing dir is an error: a pod cgroup that is gone has no limit to
// follow.
func PodLimits(h Hierarchy, dir string) (Limits, error) {
	clean := path.Clean("/" + dir)
	// Resolve of the pod cgroup as a cgroupfs path, without a spec or
	// annotations, reads exactly dir and its ancestors.
	res, err := Resolve(h, ResolveInput{CgroupsPath: clean})
	if err != nil {
		return Limits{}, fmt.Errorf("pod limits of %s: %w", dir, err)
	}
	if len(res.Sources) == 0 || res.Sources[0].Path != clean {
		return Limits{}, fmt.Errorf("pod limits of %s: %w", dir, ErrNoCgroup)
	}
	return res.Effective, nil
}

// Below returns the directories from cg up to, not including, pod: the
// cgroups between a process in cg and its pod cgroup, deepest first. It is
// empty when cg is the pod cgroup itself or not within it.
func Below(pod, cg string) []string {
	pod, cg = cleanAbs(pod), cleanAbs(cg)
	if cg == pod || !Within(pod, cg) {
		return nil
	}
	var dirs []string
	for d := cg; d != pod && d != "/"; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	return dirs
}

// SameMemory reports whether a and b limit memory alike (0 is unlimited).
func SameMemory(a, b Limits) bool { return a.MemoryBytes == b.MemoryBytes }

// SameCPU reports whether a and b hold the same CPU quota: both unlimited,
// or the same quota per the same period.
func SameCPU(a, b Limits) bool {
	if !a.CPULimited() || !b.CPULimited() {
		return a.CPULimited() == b.CPULimited()
	}
	return a.CPUQuota == b.CPUQuota && a.period() == b.period()
}

// WriteMemory writes a memory limit into the cgroup dir (relative to
// h.Root): memory.max on v2, memory.limit_in_bytes on v1; 0 writes
// unlimited ("max", -1). The directory must exist: it is never created.
func (h Hierarchy) WriteMemory(dir string, bytes uint64) error {
	d, err := h.MemoryDir(path.Clean("/" + dir))
	if err != nil {
		return fmt.Errorf("write memory limit of %s: %w", dir, err)
	}
	name, v := "memory.max", "max"
	if h.Version == V1 {
		name, v = "memory.limit_in_bytes", "-1"
	}
	if bytes > 0 {
		v = strconv.FormatUint(bytes, 10)
	}
	if !isDir(d) {
		return fmt.Errorf("write memory limit of %s: %w", dir, ErrNoCgroup)
	}
	return writeFile(filepath.Join(d, name), v)
}

// WriteCPU writes l's CPU quota into the cgroup dir: cpu.max on v2
// ("max <period>" when unlimited), cpu.cfs_period_us then cpu.cfs_quota_us
// on v1 (-1 when unlimited).
func (h Hierarchy) WriteCPU(dir string, l Limits) error {
	d, err := h.CPUDir(path.Clean("/" + dir))
	if err != nil {
		return fmt.Errorf("write CPU limit of %s: %w", dir, err)
	}
	if !isDir(d) {
		return fmt.Errorf("write CPU limit of %s: %w", dir, ErrNoCgroup)
	}
	period := strconv.FormatUint(l.period(), 10)
	if h.Version == V2 {
		q := "max"
		if l.CPULimited() {
			q = strconv.FormatInt(l.CPUQuota, 10)
		}
		return writeFile(filepath.Join(d, "cpu.max"), q+" "+period)
	}
	q := "-1"
	if l.CPULimited() {
		q = strconv.FormatInt(l.CPUQuota, 10)
		if err := writeFile(filepath.Join(d, "cpu.cfs_period_us"), period); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(d, "cpu.cfs_quota_us"), q)
}

// UnitOf returns the systemd unit whose cgroup is dir (a .scope or .slice
// directory), or "" when dir is not a unit's.
func UnitOf(dir string) string {
	u := path.Base(dir)
	if (strings.HasSuffix(u, scopeSuffix) || strings.HasSuffix(u, ".slice")) && validUnitName(u) == nil {
		return u
	}
	return ""
}

// UnitLimitProperties are the systemd properties that give a unit l's
// memory limit (memory true) and CPU quota (cpu true), as kubelet sets
// them on a pod slice: MemoryMax, CPUQuotaPerSecUSec and
// CPUQuotaPeriodUSec; unlimited is "infinity" (the maximum uint64).
func UnitLimitProperties(l Limits, memory, cpu bool) []dbus.Property {
	var props []dbus.Property
	if memory {
		v := uint64(math.MaxUint64)
		if l.MemoryLimited() {
			v = l.MemoryBytes
		}
		props = append(props, dbus.Property{Name: "MemoryMax", Value: godbus.MakeVariant(v)})
	}
	if cpu {
		perSec := uint64(math.MaxUint64)
		if l.CPULimited() {
			perSec = quotaPerSec(l)
		}
		props = append(props, dbus.Property{Name: "CPUQuotaPerSecUSec", Value: godbus.MakeVariant(perSec)})
		if l.CPULimited() && l.period() != DefaultCPUPeriod {
			props = append(props, dbus.Property{Name: "CPUQuotaPeriodUSec", Value: godbus.MakeVariant(l.period())})
		}
	}
	return props
}

// quotaPerSec is l's CPU quota as systemd's CPUQuotaPerSecUSec: time per
// second of wall clock, which systemd formats in 10 ms steps, so rounded
// up to one (runc's systemd driver does the same).
func quotaPerSec(l Limits) uint64 {
	perSec := uint64(l.CPUQuota) * 1000000 / l.period()
	if perSec%10000 != 0 {
		perSec = (perSec/10000 + 1) * 10000
	}
	return perSec
}

// SystemdCPU is the CPU quota systemd writes for l's (quota = per-second
// quota * period / 1 s): at most 10 ms a second above l's.
func SystemdCPU(l Limits) Limits {
	if !l.CPULimited() {
		return l
	}
	l.CPUQuota = int64(quotaPerSec(l) * l.period() / 1000000)
	return l
}

// unitTimeout bounds a SetUnitLimits call whose context has no deadline.
const unitTimeout = 10 * time.Second

// SetUnitLimits sets l's memory limit and/or CPU quota on a running unit
// for its life (runtime, not persisted), as kubelet resizes a pod slice.
// systemd writes the unit's cgroup files and keeps them so across a
// daemon-reload, which a file written behind its back would not survive.
func SetUnitLimits(ctx context.Context, conn Systemd, unit string, l Limits, memory, cpu bool) error {
	if err := validUnitName(unit); err != nil {
		return fmt.Errorf("set limits of %s: %w: %v", unit, ErrInvalidArgument, err)
	}
	props := UnitLimitProperties(l, memory, cpu)
	if len(props) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, unitTimeout)
		defer cancel()
	}
	if err := conn.SetUnitPropertiesContext(ctx, unit, true, props...); err != nil {
		return fmt.Errorf("set limits of %s: %w", unit, err)
	}
	return nil
}
