package cgroupfix

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// MoveToCgroupfs moves pids into the cgroup dir (relative to h.Root; for
// v1, in the memory hierarchy), for hosts with the cgroupfs driver. It
// creates dir if needed (its parent, the pod cgroup, must exist: the guard
// never invents a pod cgroup), lowers its memory limit to memoryMax before
// any process arrives (memory.max, or v1 memory.limit_in_bytes; never
// raising a lower limit already there), then writes each pid to
// cgroup.procs.
//
// runsc in cgroupfs mode applies the spec's resources only to a cgroup it
// created itself (docs/upstream.md#sizing), so a leaf created here must carry
// the limit itself.
func MoveToCgroupfs(h Hierarchy, dir string, pids []int, memoryMax uint64) error {
	for _, p := range pids {
		if p <= 0 {
			return fmt.Errorf("move to cgroup %s: %w: pid %d", dir, ErrInvalidArgument, p)
		}
	}
	clean := filepath.Clean("/" + dir)
	if clean == "/" {
		return fmt.Errorf("move to cgroup %q: %w: refusing the root cgroup", dir, ErrInvalidArgument)
	}
	d, err := h.MemoryDir(clean)
	if err != nil {
		return fmt.Errorf("move to cgroup %s: %w", dir, err)
	}
	if !isDir(filepath.Dir(d)) {
		return fmt.Errorf("move to cgroup %s: parent %s: %w", dir, filepath.Dir(d), fs.ErrNotExist)
	}
	if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", d, err)
	}
	if !isDir(d) {
		return fmt.Errorf("create cgroup %s: %w: not a directory", d, ErrInvalidArgument)
	}
	if memoryMax > 0 {
		name := "memory.max"
		if h.Version == V1 {
			name = "memory.limit_in_bytes"
		}
		l, err := h.ReadLimits(clean)
		if err != nil {
			return fmt.Errorf("move to cgroup %s: %w", dir, err)
		}
		cur := l.MemoryBytes
		if cur == 0 || memoryMax < cur {
			if err := writeFile(filepath.Join(d, name), strconv.FormatUint(memoryMax, 10)); err != nil {
				return err
			}
		}
	}
	// O_CREATE only matters on a fake tree (as in writeFile).
	return writePIDs(filepath.Join(d, "cgroup.procs"), os.O_CREATE, pids)
}

// writePIDs writes pids to the cgroup.procs file p, one per write
// (writePID); flag is added to the open flags.
func writePIDs(p string, flag int, pids []int) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|oNoFollow|flag, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	for _, pid := range pids {
		if err := writePID(f, pid); err != nil {
			f.Close()
			return fmt.Errorf("write pid %d to %s: %w", pid, p, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p, err)
	}
	return nil
}

// pidRetries and pidRetryDelay bound writePID's retries on EINVAL.
const (
	pidRetries    = 5
	pidRetryDelay = 30 * time.Millisecond
)

// writePID writes one pid to an open cgroup.procs: one pid per write(2),
// as the kernel moves one process per write. A process that exited since
// it was listed (ESRCH) is not an error: runsc's helpers come and go, and
// a gone process holds no memory. EINVAL is retried: the kernel returns it
// for a task still being forked (TASK_NEW), as opencontainers/cgroups'
// WriteCgroupProc knows.
func writePID(f interface{ WriteString(string) (int, error) }, pid int) error {
	var err error
	for i := 0; i < pidRetries; i++ {
		_, err = f.WriteString(strconv.Itoa(pid) + "\n")
		switch {
		case err == nil, errors.Is(err, syscall.ESRCH):
			return nil
		case !errors.Is(err, syscall.EINVAL):
			return err
		}
		time.Sleep(pidRetryDelay)
	}
	return err
}

// writeFile writes a cgroup control file. O_CREATE only matters on a fake
// tree; on cgroupfs the kernel refuses to create a file that is not there.
func writeFile(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC|os.O_CREATE|oNoFollow, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	if _, err := f.WriteString(v); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", v, p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p, err)
	}
	return nil
}

// unifiedMount is where systemd mounts its cgroup v2 hierarchy beside the
// v1 controllers on a hybrid node (systemd.unified_cgroup_hierarchy=0
// without systemd.legacy_systemd_cgroup_controller: Debian 12's systemd
// 252, for one).
const unifiedMount = "unified"

// JoinUnified puts pids into cgroup dir of a hybrid node's cgroup v2
// hierarchy, where systemd tracks which processes belong to a unit. That
// hierarchy has no controllers: the move charges nothing and limits
// nothing, it only tells systemd that the processes are the unit's. runsc
// knows only the v1 controllers (and name=systemd), so without it systemd
// sees a scope runsc joined as empty, stops it at once and leaves its v1
// directories behind. A node without that hierarchy, or without dir in
// it, needs nothing: it returns nil.
func JoinUnified(h Hierarchy, dir string, pids []int) error {
	if h.Version != V1 {
		return nil
	}
	base := filepath.Join(h.Root, unifiedMount)
	if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
		return nil
	}
	d, err := SecureJoin(base, dir)
	if err != nil {
		return fmt.Errorf("join unified cgroup %s: %w", dir, err)
	}
	if !isDir(d) {
		return nil
	}
	return writePIDs(filepath.Join(d, "cgroup.procs"), 0, pids)
}
