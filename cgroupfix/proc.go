package cgroupfix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// runsc re-executes itself with these argv[0] values.
const (
	Argv0Sandbox = "runsc-sandbox"
	Argv0Gofer   = "runsc-gofer"
)

// maxCmdline bounds how much of a /proc/<pid>/cmdline is read.
const maxCmdline = 1 << 20

// SandboxFlags are the sizing flags of a runsc-sandbox process.
type SandboxFlags struct {
	// TotalMemory is --total-memory: the memory the sandbox believes it
	// has (MemTotal inside it). 0 when the flag is absent.
	TotalMemory uint64
	// TotalHostMemory is --total-host-memory (absent in old runsc: 0).
	TotalHostMemory uint64
	// CPUNum is --cpu-num.
	CPUNum int
	// Bundle is --bundle.
	Bundle string
	// ContainerID is the positional argument after the boot flags.
	ContainerID string
}

// sandboxValueFlags are the boot flags whose value we read. Go's flag
// package accepts --x=v, -x=v, --x v and -x v for them.
var sandboxValueFlags = map[string]bool{
	"total-memory":      true,
	"total-host-memory": true,
	"cpu-num":           true,
	"bundle":            true,
}

// splitCmdline splits a NUL-separated /proc/<pid>/cmdline.
func splitCmdline(r io.Reader) ([]string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxCmdline))
	if err != nil {
		return nil, fmt.Errorf("read cmdline: %w", err)
	}
	return splitCmdlineBytes(b), nil
}

// splitCmdlineBytes splits a /proc/<pid>/cmdline's content.
func splitCmdlineBytes(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// runscArgv0 reports whether a cmdline's content starts with the argv[0]
// of a runsc sandbox or gofer, without splitting it.
func runscArgv0(b []byte) bool {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if i := bytes.LastIndexByte(b, '/'); i >= 0 {
		b = b[i+1:]
	}
	return string(b) == Argv0Sandbox || string(b) == Argv0Gofer
}

// flagName returns the name of a "-x", "--x", "-x=v" or "--x=v" argument,
// its inline value, and whether it is a flag at all.
func flagName(arg string) (name, value string, hasValue, ok bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", "", false, false
	}
	s := arg[1:]
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" || s[0] == '-' || s[0] == '=' {
		return "", "", false, false
	}
	name, value, hasValue = strings.Cut(s, "=")
	return name, value, hasValue, true
}

// errMissingValue is the cause inside a *ParseError for a valued flag at
// the end of a command line.
var errMissingValue = errors.New("flag needs a value")

// parseArgs reads the flags in args that are in valued (later ones win,
// like Go's flag package) and returns them with the positional arguments.
// A flag in valued without "=v" takes the next argument as its value;
// other flags never do, so unknown boolean flags cannot swallow the
// container id.
func parseArgs(args []string, valued map[string]bool) (map[string]string, []string, error) {
	flags := map[string]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			// Like Go's flag package: everything after "--" is positional.
			pos = append(pos, args[i+1:]...)
			break
		}
		name, value, hasValue, ok := flagName(args[i])
		if !ok {
			pos = append(pos, args[i])
			continue
		}
		if !valued[name] {
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, nil, newParseError("--"+name, "", errMissingValue)
			}
			i++
			value = args[i]
		}
		flags[name] = value
	}
	return flags, pos, nil
}

// ParseSandboxCmdline parses the NUL-separated /proc/<pid>/cmdline of a
// runsc sandbox, "runsc-sandbox <global flags> boot <boot flags> <id>",
// and returns the sizing flags of its boot subcommand. A command line
// without "boot" is ErrNotSandbox; a sizing flag with a bad number is a
// *ParseError.
//
// --total-memory is what the guard checks after Create: runsc before
// release-20231106.0 sets it to host RAM when only the pod slice carries
// the limit (https://github.com/google/gvisor/issues/9580).
func ParseSandboxCmdline(r io.Reader) (SandboxFlags, error) {
	args, err := splitCmdline(r)
	if err != nil {
		return SandboxFlags{}, err
	}
	boot := slices.Index(args, "boot")
	if boot < 1 {
		return SandboxFlags{}, ErrNotSandbox
	}
	flags, pos, err := parseArgs(args[boot+1:], sandboxValueFlags)
	if err != nil {
		return SandboxFlags{}, fmt.Errorf("parse sandbox cmdline: %w", err)
	}
	var sf SandboxFlags
	if v, ok := flags["total-memory"]; ok {
		if sf.TotalMemory, err = parseUint("--total-memory", v); err != nil {
			return SandboxFlags{}, err
		}
	}
	if v, ok := flags["total-host-memory"]; ok {
		if sf.TotalHostMemory, err = parseUint("--total-host-memory", v); err != nil {
			return SandboxFlags{}, err
		}
	}
	if v, ok := flags["cpu-num"]; ok {
		n, err := parseUint("--cpu-num", v)
		if err != nil {
			return SandboxFlags{}, err
		}
		if n > 1<<20 {
			return SandboxFlags{}, newParseError("--cpu-num", v, strconv.ErrRange)
		}
		sf.CPUNum = int(n)
	}
	sf.Bundle = flags["bundle"]
	// The id is runsc's last argument. Anything else positional (a
	// value split off a flag we do not know) comes before it.
	if len(pos) > 0 && pos[len(pos)-1] == args[len(args)-1] {
		sf.ContainerID = pos[len(pos)-1]
	}
	return sf, nil
}

// ParseProcCgroup parses /proc/<pid>/cgroup. It returns the cgroup v2
// path (the "0::" line, "" if there is none) and, for cgroup v1, a map
// from each controller (and "name=..." hierarchy) to its path. Paths may
// contain ":" (old runsc creates "/system.slice/<slice>:<prefix>:<id>",
// https://github.com/google/gvisor/issues/10264). A malformed line is a
// *ParseError.
func ParseProcCgroup(r io.Reader) (v2Path string, v1 map[string]string, err error) {
	b, err := io.ReadAll(io.LimitReader(r, maxCmdline))
	if err != nil {
		return "", nil, fmt.Errorf("read cgroup: %w", err)
	}
	return parseProcCgroup(b)
}

// parseProcCgroup is ParseProcCgroup of the file's content.
func parseProcCgroup(b []byte) (v2Path string, v1 map[string]string, err error) {
	for len(b) > 0 {
		var raw []byte
		raw, b, _ = bytes.Cut(b, []byte{'\n'})
		if len(raw) == 0 {
			continue
		}
		line := string(raw)
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			return "", nil, newParseError("cgroup", line, strconv.ErrSyntax)
		}
		if _, err := strconv.ParseUint(parts[0], 10, 32); err != nil {
			return "", nil, newParseError("cgroup", line, strconv.ErrSyntax)
		}
		path := parts[2]
		if parts[0] == "0" && parts[1] == "" {
			v2Path = path
			continue
		}
		if v1 == nil {
			v1 = map[string]string{}
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" {
				v1[c] = path
			}
		}
	}
	return v2Path, v1, nil
}

// Proc is a runsc process found under a /proc root.
type Proc struct {
	// PID is the process id.
	PID int `json:"pid"`
	// Argv0 is the first element of its command line.
	Argv0 string `json:"argv0"`
	// Cgroup is its cgroup: the v2 path, or the v1 memory path when the
	// host has no v2 line (or an empty one).
	Cgroup string `json:"cgroup"`
	// Controllers are, on cgroup v1, its cgroups in the other hierarchies
	// that carry a pod limit (cpu, pids), by controller name.
	Controllers map[string]string `json:"controllers,omitempty"`
}

// v1LimitControllers are the cgroup v1 controllers besides memory whose
// hierarchy holds a pod limit kubelet sets (CPU quota, pids.max).
var v1LimitControllers = []string{"cpu", "pids"}

// InPod reports whether p is in podCgroup (or below it) in every
// hierarchy that carries a pod limit.
func (p Proc) InPod(podCgroup string) bool {
	if !Within(podCgroup, p.Cgroup) {
		return false
	}
	for _, cg := range p.Controllers {
		if !Within(podCgroup, cg) {
			return false
		}
	}
	return true
}

// pids lists the numeric entries of procRoot in ascending order.
func pids(procRoot string) ([]int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", procRoot, err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// procReader reads the files of processes beneath an opened /proc root
// (safefile.Dir), into one reused buffer.
type procReader struct {
	d   *safefile.Dir
	buf []byte
}

func openProc(procRoot string) (*procReader, error) {
	d, err := safefile.OpenDir(procRoot)
	if err != nil {
		return nil, err
	}
	return &procReader{d: d, buf: make([]byte, 0, 4096)}, nil
}

func (r *procReader) close() { r.d.Close() }

// read reads <pid>/<name>, of at most maxCmdline bytes; the result is
// valid until the next read.
func (r *procReader) read(pid int, name string) ([]byte, error) {
	var pb [32]byte
	rel := append(append(strconv.AppendInt(pb[:0], int64(pid), 10), '/'), name...)
	b, err := r.d.ReadFile(string(rel), maxCmdline, r.buf)
	if cap(b) > cap(r.buf) {
		r.buf = b[:0]
	}
	return b, err
}

// cmdline reads <procRoot>/<pid>/cmdline. Processes that exit while
// we scan simply vanish; callers skip any error.
func (r *procReader) cmdline(pid int) ([]string, error) {
	b, err := r.read(pid, "cmdline")
	if err != nil {
		return nil, err
	}
	if !runscArgv0(b) {
		return nil, nil // not a runsc sandbox or gofer: not split
	}
	return splitCmdlineBytes(b), nil
}

// cgroups is ProcCgroups through r.
func (r *procReader) cgroups(pid int) (string, map[string]string, error) {
	b, err := r.read(pid, "cgroup")
	if err != nil {
		return "", nil, fmt.Errorf("read %s: %w", r.d.Path(strconv.Itoa(pid)+"/cgroup"), err)
	}
	v2, v1, err := parseProcCgroup(b)
	if err != nil {
		return "", nil, fmt.Errorf("read %s: %w", r.d.Path(strconv.Itoa(pid)+"/cgroup"), err)
	}
	// On a hybrid host the "0::" line exists but the memory controller
	// is v1's, so prefer the v1 memory path whenever there is one.
	m, ok := v1["memory"]
	if !ok {
		return v2, nil, nil
	}
	var others map[string]string
	for _, c := range v1LimitControllers {
		if cg, ok := v1[c]; ok {
			if others == nil {
				others = map[string]string{}
			}
			others[c] = cg
		}
	}
	return m, others, nil
}

// ProcCgroup returns the cgroup of pid under procRoot: the v2 path, or
// the v1 memory controller's path when there is no v2 one.
func ProcCgroup(procRoot string, pid int) (string, error) {
	cg, _, err := ProcCgroups(procRoot, pid)
	return cg, err
}

// ProcCgroups returns what ProcCgroup does and, on cgroup v1, the
// process's cgroups in the cpu and pids hierarchies (Proc.Controllers).
func ProcCgroups(procRoot string, pid int) (string, map[string]string, error) {
	r, err := openProc(procRoot)
	if err != nil {
		return "", nil, err
	}
	defer r.close()
	return r.cgroups(pid)
}

// RunscProc is a runsc sandbox or gofer process found by ScanRunsc.
type RunscProc struct {
	Proc
	// Sandbox are the boot flags of a runsc-sandbox (zero for a gofer).
	Sandbox SandboxFlags
	// Root is a sandbox's global --root (/run/containerd/runsc/<namespace>
	// under the runsc shim); "" for a gofer.
	Root string
	// Bundle is --bundle as written on the command line.
	Bundle string
}

// IsSandbox reports whether p is a runsc-sandbox (else a runsc-gofer).
func (p RunscProc) IsSandbox() bool { return filepath.Base(p.Argv0) == Argv0Sandbox }

var (
	goferValueFlags  = map[string]bool{"bundle": true}
	globalValueFlags = map[string]bool{"root": true}
)

// ScanRunsc reads every <procRoot>/<pid>/cmdline once and returns, in pid
// order, the runsc-sandbox processes that boot a container and the
// runsc-gofer processes that serve a bundle, with their cgroups. Processes
// that exit during the scan are left out; any other error reading a
// cgroup is returned.
func ScanRunsc(procRoot string) ([]RunscProc, error) {
	all, err := pids(procRoot)
	if err != nil {
		return nil, fmt.Errorf("scan runsc processes: %w", err)
	}
	r, err := openProc(procRoot)
	if err != nil {
		return nil, fmt.Errorf("scan runsc processes: %w", err)
	}
	defer r.close()
	var out []RunscProc
	for _, pid := range all {
		args, err := r.cmdline(pid)
		if err != nil || len(args) == 0 {
			continue // exited, or a kernel thread
		}
		p := RunscProc{Proc: Proc{PID: pid, Argv0: args[0]}}
		switch filepath.Base(args[0]) {
		case Argv0Sandbox:
			boot := slices.Index(args, "boot")
			if boot < 1 {
				continue // "runsc-sandbox" without boot: not a sandbox
			}
			sf, err := ParseSandboxCmdline(strings.NewReader(strings.Join(args, "\x00")))
			if err != nil || sf.ContainerID == "" {
				continue
			}
			p.Sandbox, p.Bundle = sf, sf.Bundle
			if global, _, err := parseArgs(args[1:boot], globalValueFlags); err == nil {
				p.Root = global["root"]
			}
		case Argv0Gofer:
			flags, _, err := parseArgs(args[1:], goferValueFlags)
			if err != nil || flags["bundle"] == "" {
				continue
			}
			p.Bundle = flags["bundle"]
		default:
			continue
		}
		if p.Cgroup, p.Controllers, err = r.cgroups(pid); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // exited while we looked
			}
			return nil, fmt.Errorf("scan runsc processes: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// FindSandbox returns the pid and flags of the runsc-sandbox process
// booting containerID. It returns ErrSandboxNotFound if there is none and
// ErrMultipleSandboxes if more than one claims the id.
func FindSandbox(procRoot, containerID string) (pid int, flags SandboxFlags, err error) {
	procs, err := ScanRunsc(procRoot)
	if err != nil {
		return 0, SandboxFlags{}, fmt.Errorf("find sandbox %s: %w", containerID, err)
	}
	p, err := SandboxOf(procs, containerID)
	if err != nil {
		return 0, SandboxFlags{}, fmt.Errorf("%w (under %s)", err, procRoot)
	}
	return p.PID, p.Sandbox, nil
}

// SandboxOf picks the runsc-sandbox booting containerID out of a scan.
func SandboxOf(procs []RunscProc, containerID string) (RunscProc, error) {
	if containerID == "" {
		return RunscProc{}, fmt.Errorf("find sandbox: %w: empty container id", ErrInvalidArgument)
	}
	var found RunscProc
	for _, p := range procs {
		if !p.IsSandbox() || p.Sandbox.ContainerID != containerID {
			continue
		}
		if found.PID != 0 {
			return RunscProc{}, fmt.Errorf("find sandbox %s: %w: pids %d and %d", containerID, ErrMultipleSandboxes, found.PID, p.PID)
		}
		found = p
	}
	if found.PID == 0 {
		return RunscProc{}, fmt.Errorf("find sandbox %s: %w", containerID, ErrSandboxNotFound)
	}
	return found, nil
}

// FindGofers returns the runsc-gofer processes whose --bundle is bundle,
// with their cgroups.
func FindGofers(procRoot, bundle string) ([]Proc, error) {
	procs, err := ScanRunsc(procRoot)
	if err != nil {
		return nil, fmt.Errorf("find gofers of %s: %w", bundle, err)
	}
	return GofersOf(procs, bundle)
}

// GofersOf picks the runsc-gofer processes serving bundle out of a scan.
// Old runsc leaves an app container's gofer in
// /system.slice/containerd.service even with systemd-cgroup set
// (docs/upstream.md#placement; https://github.com/google/gvisor/issues/2535).
func GofersOf(procs []RunscProc, bundle string) ([]Proc, error) {
	if bundle == "" {
		return nil, fmt.Errorf("find gofers: %w: empty bundle", ErrInvalidArgument)
	}
	want := filepath.Clean(bundle)
	var out []Proc
	for _, p := range procs {
		if !p.IsSandbox() && filepath.Clean(p.Bundle) == want {
			out = append(out, p.Proc)
		}
	}
	return out, nil
}

// ProcsInCgroup reads the pids in the cgroup.procs of dir (relative to
// h.Root; for v1, in the memory hierarchy). Every process there has to be
// moved together: moving only the sandbox and gofer lets runsc's helper
// processes, and the workload charged to them, escape (docs/upstream.md#move).
func ProcsInCgroup(h Hierarchy, dir string) ([]int, error) {
	d, err := h.MemoryDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list procs of %s: %w", dir, err)
	}
	p := filepath.Join(d, "cgroup.procs")
	f, err := os.OpenFile(p, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, newParseError(p, s, strconv.ErrSyntax)
		}
		out = append(out, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return out, nil
}

// cleanAbs is filepath.Clean("/"+p), without its allocation when p is
// already clean and absolute, as the cgroups in /proc are.
func cleanAbs(p string) string {
	if len(p) > 0 && p[0] == '/' && (p == "/" || p[len(p)-1] != '/') &&
		!strings.Contains(p, "//") && !strings.Contains(p, "/./") && !strings.Contains(p, "/../") &&
		!strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..") {
		return p
	}
	return filepath.Clean("/" + p)
}

// Within reports whether cgroup cg is podCgroup or below it, comparing
// whole path components: "/a/pod1" contains "/a/pod1/x" but not
// "/a/pod10". Both are cleaned first, so ".." cannot fake containment. An
// empty podCgroup contains nothing.
func Within(podCgroup, cg string) bool {
	if podCgroup == "" || cg == "" {
		return false
	}
	pod, c := cleanAbs(podCgroup), cleanAbs(cg)
	if pod == "/" {
		return true
	}
	return c == pod || (len(c) > len(pod) && c[len(pod)] == '/' && c[:len(pod)] == pod)
}
