package cgroupfix

import (
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Version is a cgroup hierarchy version.
type Version int

const (
	// V1 is the legacy per-controller hierarchy (memory/, cpu,cpuacct/, ...).
	V1 Version = 1
	// V2 is the unified hierarchy.
	V2 Version = 2
)

// String returns "v1" or "v2".
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return fmt.Sprintf("Version(%d)", int(v))
}

// DetectVersion reports whether root is a cgroup v2 mount (it has
// cgroup.controllers) or a cgroup v1 tree (it has a memory/ directory).
// A hybrid host, v1 controllers with a v2 "unified" mount, is V1: that is
// where the memory controller lives.
func DetectVersion(root string) (Version, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return V2, nil
	}
	if st, err := os.Stat(filepath.Join(root, "memory")); err == nil && st.IsDir() {
		return V1, nil
	}
	return 0, fmt.Errorf("detect cgroup version under %s: %w", root, ErrUnknownHierarchy)
}

// Hierarchy is a cgroup tree mounted at Root (normally /sys/fs/cgroup; a
// temporary directory in tests).
type Hierarchy struct {
	Root    string
	Version Version
	// open, when set by Open, are the controllers' directories opened once
	// for every read through this Hierarchy.
	open *bases
	// seen, when set by Snapshot, holds each cgroup's limits as first
	// read.
	seen map[string]cachedLimits
}

type cachedLimits struct {
	l      Limits
	exists bool
	err    error
}

// Snapshot returns h reading each cgroup's limits once: for a view of the
// node at one moment, such as an audit, where the pods share ancestors
// (kubepods.slice, the QoS slices). Not safe for concurrent use.
func (h Hierarchy) Snapshot() Hierarchy {
	h.seen = map[string]cachedLimits{}
	return h
}

// readLimits reads dir's limits beneath b, or remembers them in a
// Snapshot.
func (h Hierarchy) readLimits(b bases, dir string, buf []byte) (Limits, bool, error) {
	if h.seen == nil {
		return b.readLimits(h.Version, dir, buf)
	}
	if c, ok := h.seen[dir]; ok {
		return c.l, c.exists, c.err
	}
	l, exists, err := b.readLimits(h.Version, dir, buf)
	h.seen[dir] = cachedLimits{l, exists, err}
	return l, exists, err
}

// Open returns h with the directories its limits are read beneath opened
// once, for a process that reads many (the guard's server, an audit),
// and the func that closes them. Without it each read opens them anew.
func (h Hierarchy) Open() (Hierarchy, func(), error) {
	b, err := h.openBases()
	if err != nil {
		return h, nil, fmt.Errorf("open cgroup hierarchy %s: %w", h.Root, err)
	}
	h.open = &b
	return h, b.close, nil
}

// bases returns the opened bases, or opens them for one read (done closes
// them).
func (h Hierarchy) bases() (b bases, done func(), err error) {
	if h.open != nil {
		return *h.open, func() {}, nil
	}
	if b, err = h.openBases(); err != nil {
		return bases{}, nil, err
	}
	return b, b.close, nil
}

// v1 CPU controller mount names, in the order they are tried. On most
// hosts "cpu" is a symlink to "cpu,cpuacct".
var v1CPUMounts = []string{"cpu,cpuacct", "cpu"}

// MemoryDir returns the host directory holding the memory files of the
// cgroup dir (relative to the cgroupfs root), joined with SecureJoin.
func (h Hierarchy) MemoryDir(dir string) (string, error) {
	mem, _, err := h.controllerBases()
	if err != nil {
		return "", fmt.Errorf("memory dir of %s: %w", dir, err)
	}
	return SecureJoin(mem, dir)
}

// CPUDir returns the host directory holding the CPU files of the cgroup
// dir. For v1 it picks the first of cpu,cpuacct/ and cpu/ that exists.
func (h Hierarchy) CPUDir(dir string) (string, error) {
	_, cpu, err := h.controllerBases()
	if err != nil {
		return "", fmt.Errorf("cpu dir of %s: %w", dir, err)
	}
	return SecureJoin(cpu, dir)
}

// Limits are the memory and CPU limits of one cgroup or one source.
type Limits struct {
	// MemoryBytes is the memory limit; 0 means unlimited.
	MemoryBytes uint64 `json:"memory_bytes"`
	// CPUQuota is the CFS quota in microseconds per CPUPeriod; <= 0 means
	// unlimited.
	CPUQuota int64 `json:"cpu_quota,omitempty"`
	// CPUPeriod is the CFS period in microseconds; 0 means the kernel
	// default, DefaultCPUPeriod.
	CPUPeriod uint64 `json:"cpu_period,omitempty"`
}

// DefaultCPUPeriod is the kernel's default CFS period in microseconds.
const DefaultCPUPeriod uint64 = 100000

// MemoryLimited reports whether l carries a memory limit.
func (l Limits) MemoryLimited() bool { return l.MemoryBytes > 0 }

// CPULimited reports whether l carries a CPU quota.
func (l Limits) CPULimited() bool { return l.CPUQuota > 0 }

func (l Limits) period() uint64 {
	if l.CPUPeriod == 0 {
		return DefaultCPUPeriod
	}
	return l.CPUPeriod
}

// CPUs returns quota/period as a number of CPUs, or 0 when unlimited.
func (l Limits) CPUs() float64 {
	if !l.CPULimited() {
		return 0
	}
	return float64(l.CPUQuota) / float64(l.period())
}

// CPUCount returns ceil(quota/period), the whole CPUs a sandbox needs to
// use its quota (runsc's --cpu-num when cpu-num-from-quota is on, before
// its minimum of 2), or 0 when unlimited.
func (l Limits) CPUCount() int {
	if !l.CPULimited() {
		return 0
	}
	q, p := uint64(l.CPUQuota), l.period()
	n := q / p
	if q%p != 0 {
		n++
	}
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n)
}

// cpuLess reports whether a's quota/period ratio is strictly lower than
// b's; an unlimited side is never lower. It compares a.q*b.p < b.q*a.p in
// 128 bits, so no input overflows.
func cpuLess(a, b Limits) bool {
	if !a.CPULimited() {
		return false
	}
	if !b.CPULimited() {
		return true
	}
	ah, al := bits.Mul64(uint64(a.CPUQuota), b.period())
	bh, bl := bits.Mul64(uint64(b.CPUQuota), a.period())
	return ah < bh || ah == bh && al < bl
}

// Source is one place a limit was read from.
type Source struct {
	// Kind is "cgroup", "spec" or "annotation".
	Kind string `json:"kind"`
	// Path is the cgroup directory (relative to the root) for "cgroup",
	// "linux.resources" for "spec", and the annotation prefix for
	// "annotation".
	Path string `json:"path"`
	// Limits are the limits found there.
	Limits Limits `json:"limits"`
}

// Source kinds.
const (
	KindCgroup     = "cgroup"
	KindSpec       = "spec"
	KindAnnotation = "annotation"
)

// memoryUnlimitedThreshold: values at or above it mean "no limit". cgroup
// v1 reports an unset memory.limit_in_bytes as LLONG_MAX rounded down to
// the page size (9223372036854771712 with 4 KiB pages, less with 64 KiB
// pages); 2^62 bytes (4 EiB) is above any real limit and below every such
// rounding.
const memoryUnlimitedThreshold = uint64(1) << 62

// maxLimitFile bounds how much of a limit file is read.
const maxLimitFile = 4096

// limitBufSize is the scratch buffer limit files are read into: every
// valid one fits; a longer one grows it up to maxLimitFile.
const limitBufSize = 64

// errTooLong is the cause inside a *ParseError for a limit file longer
// than any valid one.
var errTooLong = errors.New("value too long")

// readSmall reads a small limit file; anything longer than maxLimitFile is
// a *ParseError rather than silently truncated into something valid.
func readSmall(file string, r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxLimitFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	if len(b) > maxLimitFile {
		return "", newParseError(file, string(b), errTooLong)
	}
	return string(b), nil
}

// ParseMemoryMax parses a cgroup v2 memory.max or a cgroup v1
// memory.limit_in_bytes. It returns 0 for unlimited: "max", or a value at
// or above 2^62 (v1's page-rounded LLONG_MAX). Anything else that is not a
// single positive decimal integer, including 0, a negative number or one
// that overflows uint64, is a *ParseError.
func ParseMemoryMax(r io.Reader) (uint64, error) {
	raw, err := readSmall("memory.max", r)
	if err != nil {
		return 0, err
	}
	return parseMemoryMax(raw)
}

func parseMemoryMax(raw string) (uint64, error) {
	const file = "memory.max"
	s := strings.TrimSpace(raw)
	if s == "max" {
		return 0, nil
	}
	v, err := parseUint(file, s)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, newParseError(file, s, ErrZeroLimit)
	}
	if v >= memoryUnlimitedThreshold {
		return 0, nil
	}
	return v, nil
}

func parseUint(file, s string) (uint64, error) {
	if strings.HasPrefix(s, "-") {
		return 0, newParseError(file, s, ErrNegative)
	}
	if s == "" || s[0] == '+' {
		return 0, newParseError(file, s, strconv.ErrSyntax)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
		}
		return 0, newParseError(file, s, err)
	}
	return v, nil
}

// ParseCPUMax parses a cgroup v2 cpu.max: "max 100000" (quota -1, i.e.
// unlimited) or "50000 100000". A lone "max" or "<quota>" gets the default
// period. A zero or negative quota or period is a *ParseError.
func ParseCPUMax(r io.Reader) (quota int64, period uint64, err error) {
	raw, err := readSmall("cpu.max", r)
	if err != nil {
		return 0, 0, err
	}
	return parseCPUMax(raw)
}

func parseCPUMax(raw string) (quota int64, period uint64, err error) {
	const file = "cpu.max"
	s := strings.TrimSpace(raw)
	// One or two fields, one space between (strings.Fields without its
	// allocation).
	q0, p0, two := strings.Cut(s, " ")
	if q0 == "" || strings.ContainsAny(p0, " \t\n") || strings.ContainsAny(q0, "\t\n") || (two && p0 == "") {
		return 0, 0, newParseError(file, s, strconv.ErrSyntax)
	}
	f := [2]string{q0, p0}
	period = DefaultCPUPeriod
	if two {
		if period, err = parseUint(file, f[1]); err != nil {
			return 0, 0, err
		}
		if period == 0 {
			return 0, 0, newParseError(file, s, ErrZeroLimit)
		}
	}
	if f[0] == "max" {
		return -1, period, nil
	}
	q, err := parseUint(file, f[0])
	if err != nil {
		return 0, 0, err
	}
	if q == 0 {
		return 0, 0, newParseError(file, s, ErrZeroLimit)
	}
	if q > math.MaxInt64 {
		return 0, 0, newParseError(file, s, strconv.ErrRange)
	}
	return int64(q), period, nil
}

// ParseCPUQuotaV1 parses a cgroup v1 cpu.cfs_quota_us: -1 is unlimited
// (returned as -1), a positive value is the quota, anything else is a
// *ParseError.
func ParseCPUQuotaV1(r io.Reader) (int64, error) {
	raw, err := readSmall("cpu.cfs_quota_us", r)
	if err != nil {
		return 0, err
	}
	return parseCPUQuotaV1(raw)
}

func parseCPUQuotaV1(raw string) (int64, error) {
	const file = "cpu.cfs_quota_us"
	s := strings.TrimSpace(raw)
	if s == "-1" {
		return -1, nil
	}
	q, err := parseUint(file, s)
	if err != nil {
		return 0, err
	}
	if q == 0 {
		return 0, newParseError(file, s, ErrZeroLimit)
	}
	if q > math.MaxInt64 {
		return 0, newParseError(file, s, strconv.ErrRange)
	}
	return int64(q), nil
}

// ParseCPUPeriodV1 parses a cgroup v1 cpu.cfs_period_us, a positive
// integer.
func ParseCPUPeriodV1(r io.Reader) (uint64, error) {
	raw, err := readSmall("cpu.cfs_period_us", r)
	if err != nil {
		return 0, err
	}
	return parseCPUPeriodV1(raw)
}

func parseCPUPeriodV1(raw string) (uint64, error) {
	const file = "cpu.cfs_period_us"
	s := strings.TrimSpace(raw)
	p, err := parseUint(file, s)
	if err != nil {
		return 0, err
	}
	if p == 0 {
		return 0, newParseError(file, s, ErrZeroLimit)
	}
	return p, nil
}

// parseFile reads dir/name beneath d and runs parse on it. A missing file
// reports found == false and no error; a parse error gets the full path in
// File.
func parseFile[T any](d *safefile.Dir, dir, name string, buf []byte, parse func(string) (T, error)) (v T, found bool, err error) {
	rel := joinFile(dir, name)
	b, err := d.ReadFile(rel, maxLimitFile, buf)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return v, false, nil
		case errors.Is(err, safefile.ErrTooLarge):
			return v, false, newParseError(d.Path(rel), "", errTooLong)
		}
		return v, false, fmt.Errorf("read %s: %w", d.Path(rel), err)
	}
	v, err = parse(string(b))
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.File = d.Path(rel)
			return v, false, pe
		}
		return v, false, fmt.Errorf("read %s: %w", d.Path(rel), err)
	}
	return v, true, nil
}

// joinFile is path.Join(dir, name) for a dir that is already clean and
// absolute (every cgroup directory here is) and a plain file name, without
// path.Clean's pass over the whole path (a tenth of Resolve's time when it
// ran for each of its files).
func joinFile(dir, name string) string {
	switch {
	case dir == "/" || dir == "":
		return name
	case dir[0] == '/' && dir[len(dir)-1] != '/':
		return dir[1:] + "/" + name // safefile still refuses "." and ".." parts
	}
	return path.Join(dir, name)
}

type cpuMax struct {
	quota  int64
	period uint64
}

func parseCPUMaxPair(raw string) (cpuMax, error) {
	q, p, err := parseCPUMax(raw)
	return cpuMax{q, p}, err
}

// ReadLimits reads the limits of one cgroup dir (relative to h.Root).
// Missing files, and a missing directory, read as unlimited; a file that
// exists but does not parse is an error.
func (h Hierarchy) ReadLimits(dir string) (Limits, error) {
	b, done, err := h.bases()
	if err != nil {
		return Limits{}, fmt.Errorf("read limits of %s: %w", dir, err)
	}
	defer done()
	l, _, err := h.readLimits(b, dir, make([]byte, 0, limitBufSize))
	return l, err
}

// bases are the open directories under which the memory and the CPU files
// of every cgroup are read: the root on v2; on v1 the memory and the cpu
// controllers' (cpu is nil on a v1 node without one).
type bases struct{ mem, cpu *safefile.Dir }

// openBases opens h's bases. On v1 a controller may be a symlink to a
// sibling in the root (cpu -> cpu,cpuacct), never out of it: a link out of
// the root must not make the guard read another tree's limits.
func (h Hierarchy) openBases() (bases, error) {
	switch h.Version {
	case V2:
		d, err := safefile.OpenDir(h.Root)
		if err != nil {
			return bases{}, err
		}
		return bases{mem: d, cpu: d}, nil
	case V1:
		memDir, cpuDir, err := h.controllerBases()
		if err != nil {
			return bases{}, err
		}
		mem, err := safefile.OpenDir(memDir)
		if err != nil {
			return bases{}, fmt.Errorf("v1 memory controller: %w", err)
		}
		b := bases{mem: mem}
		if b.cpu, err = safefile.OpenDir(cpuDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			mem.Close()
			return bases{}, fmt.Errorf("v1 cpu controller: %w", err)
		}
		return b, nil
	}
	return bases{}, fmt.Errorf("%w (version %v)", ErrUnknownHierarchy, h.Version)
}

func (b bases) close() {
	b.mem.Close()
	if b.cpu != nil && b.cpu != b.mem {
		b.cpu.Close()
	}
}

// v1ControllerDir is the host directory of the v1 controller name: a
// directory in h.Root, or a symlink to a directory beside it.
func (h Hierarchy) v1ControllerDir(name string) (string, error) {
	p := filepath.Join(h.Root, name)
	st, err := os.Lstat(p)
	if err != nil {
		return "", err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(t) && filepath.Dir(filepath.Clean(t)) == filepath.Clean(h.Root) {
			t = filepath.Base(t)
		}
		t = strings.TrimPrefix(t, "./")
		if strings.Contains(t, "/") || t == ".." || t == "." || t == "" {
			return "", fmt.Errorf("%w: %s links to %s, not to a controller beside it", ErrPathEscape, p, t)
		}
		p = filepath.Join(h.Root, t)
		if st, err = os.Lstat(p); err != nil {
			return "", err
		}
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%w: %s is not a directory", ErrPathEscape, p)
	}
	return p, nil
}

// controllerBases returns the directories under which the memory and the
// CPU files of every cgroup live.
func (h Hierarchy) controllerBases() (mem, cpu string, err error) {
	switch h.Version {
	case V2:
		return h.Root, h.Root, nil
	case V1:
		// Resolved as openBases resolves them (v1ControllerDir).
		if mem, err = h.v1ControllerDir("memory"); err != nil {
			return "", "", fmt.Errorf("v1 memory controller: %w", err)
		}
		cpu = filepath.Join(h.Root, v1CPUMounts[0]) // none: reads find nothing
		for _, m := range v1CPUMounts {
			c, err := h.v1ControllerDir(m)
			if err == nil {
				return mem, c, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", "", fmt.Errorf("v1 cpu controller: %w", err)
			}
		}
		return mem, cpu, nil
	}
	return "", "", fmt.Errorf("%w (version %v)", ErrUnknownHierarchy, h.Version)
}

// readLimits reads the limits of the cgroup dir (relative to the root)
// beneath b, and reports whether its directory exists in either
// controller. buf is scratch space for the files.
func (b bases) readLimits(v Version, dir string, buf []byte) (l Limits, exists bool, err error) {
	name := "memory.max"
	if v == V1 {
		name = "memory.limit_in_bytes"
	}
	// Try the file first: when it is there, the directory is too, and the
	// check is saved.
	mem, found, err := parseFile(b.mem, dir, name, buf, parseMemoryMax)
	if err != nil {
		return Limits{}, true, err
	}
	if found || dir == "/" || b.mem.IsDir(dir) {
		exists = true
		l.MemoryBytes = mem
	}
	switch {
	case v == V2 && exists:
		c, found, err := parseFile(b.cpu, dir, "cpu.max", buf, parseCPUMaxPair)
		if err != nil {
			return Limits{}, true, err
		}
		if found && c.quota > 0 {
			l.CPUQuota, l.CPUPeriod = c.quota, c.period
		}
	case v == V1 && b.cpu != nil:
		q, found, err := parseFile(b.cpu, dir, "cpu.cfs_quota_us", buf, parseCPUQuotaV1)
		if err != nil {
			return Limits{}, true, err
		}
		if found || dir == "/" || b.cpu.IsDir(dir) {
			exists = true
		}
		if found && q > 0 {
			p, pfound, err := parseFile(b.cpu, dir, "cpu.cfs_period_us", buf, parseCPUPeriodV1)
			if err != nil {
				return Limits{}, true, err
			}
			if !pfound {
				p = DefaultCPUPeriod
			}
			l.CPUQuota, l.CPUPeriod = q, p
		}
	}
	return l, exists, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
