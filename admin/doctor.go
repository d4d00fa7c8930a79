package admin

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"github.com/runsc-guard/runsc-guard/runsc"
	"io"
	"os/exec"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
)

// Levels of a doctor finding.
const (
	LevelOK    = "OK"
	LevelInfo  = "INFO"
	LevelWarn  = "WARN"
	LevelError = "ERROR"
)

// Binaries the doctor looks for on containerd's PATH.
const (
	guardShimBinary = "containerd-shim-runsc-guard-v1"
	runscShimBinary = "containerd-shim-runsc-v1"
)

// Finding is one result of the doctor.
type Finding struct {
	Level   string `json:"level"`
	Check   string `json:"check"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// DoctorEnv is what the doctor reads: files by path, programs through Run.
type DoctorEnv struct {
	// Config is containerd's configuration file.
	Config string
	// CgroupRoot is the cgroupfs mount.
	CgroupRoot string
	// ShimPath is the runsc shim the guard delegates to (its shim_path).
	ShimPath string
	// Run runs a program and returns its combined output.
	Run func(name string, args ...string) (string, error)
	// LookPath finds a program on containerd's PATH.
	LookPath func(name string) (string, error)
	// BuildInfo reads the Go build information of a binary.
	BuildInfo func(path string) (*debug.BuildInfo, error)
}

// runProgram runs name with a timeout and returns its combined output.
func runProgram(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// version is a parsed containerd version; zero when unknown.
type version struct{ major, minor, patch int }

func (v version) known() bool { return v != version{} }

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch) }

var containerdVersionRe = regexp.MustCompile(`\bv?(\d+)\.(\d+)\.(\d+)`)

// parseContainerdVersion reads `containerd --version`: "containerd
// github.com/containerd/containerd v1.6.24 61f9fd88..." or Debian's
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1".
func parseContainerdVersion(out string) version {
	m := containerdVersionRe.FindStringSubmatch(out)
	if m == nil {
		return version{}
	}
	var v version
	v.major, _ = strconv.Atoi(m[1])
	v.minor, _ = strconv.Atoi(m[2])
	v.patch, _ = strconv.Atoi(m[3])
	return v
}

// runscOptions are the parts of a runsc shim options file the doctor reads.
type runscOptions struct {
	binary string
	// systemdCgroup is [runsc_config] systemd-cgroup: "true", "" when
	// absent, or the raw value otherwise.
	systemdCgroup string
	// badType: systemd-cgroup is not a string, which the runsc shim
	// cannot decode (its RunscConfig is map[string]string).
	badType bool
}

func readRunscOptions(path string) (runscOptions, error) {
	if path == "" {
		return runscOptions{binary: "runsc"}, nil
	}
	body, err := safefile.ReadFile(path, runsc.MaxOptionsSize+3)
	if err != nil {
		return runscOptions{}, fmt.Errorf("read runsc options: %w", err)
	}
	var o runscOptions
	if o.binary, err = runsc.Binary(body); err != nil {
		return runscOptions{}, fmt.Errorf("runsc options %s: %w", path, err)
	}
	var doc struct {
		RunscConfig map[string]any `toml:"runsc_config"`
	}
	if err := runsc.Decode(body, &doc); err != nil {
		return runscOptions{}, fmt.Errorf("runsc options %s: %w", path, err)
	}
	switch v := doc.RunscConfig[runsc.SystemdCgroupKey].(type) {
	case nil:
	case string:
		o.systemdCgroup = v
	default:
		o.systemdCgroup, o.badType = fmt.Sprint(v), true
	}
	return o, nil
}

// replyFormat says how a runsc shim answers start, from the containerd
// shim library it was built with: containerd v1's prints a plain address;
// v2.0-v2.2's pkg/shim prints JSON bootstrap parameters, which containerd
// 1.6 cannot parse (it dials the reply as an address); v2.3's and later
// print a protobuf BootstrapResult, which only containerd >= 2.3 parses
// (core/runtime/v2/shim.go parseStartResponse).
func replyFormat(bi *debug.BuildInfo) string {
	if bi == nil {
		return ""
	}
	for _, d := range bi.Deps {
		switch {
		case d.Path == "github.com/containerd/containerd/v2":
			if v := parseContainerdVersion(d.Version); v.known() && (v.major > 2 || v.minor >= 3) {
				return "protobuf"
			}
			return "json"
		case d.Path == "github.com/containerd/containerd":
			return "plain"
		}
	}
	return ""
}

type doctor struct {
	env      DoctorEnv
	findings []Finding
}

func (d *doctor) add(level, check, fix, format string, a ...any) {
	d.findings = append(d.findings, Finding{Level: level, Check: check, Message: fmt.Sprintf(format, a...), Fix: fix})
}

const installFix = "put the handler behind the guard: install.sh, or containerd-shim-runsc-guard-v1 configure --handler "

// RunDoctor checks the node and returns its findings.
func RunDoctor(env DoctorEnv) []Finding {
	d := &doctor{env: env}
	cgv := d.checkCgroup()
	ctrd := d.checkContainerd()
	files, err := LoadContainerdConfig(env.Config)
	if err != nil {
		d.add(LevelError, "containerd config", "fix the file; containerd will not start with it either", "%v", err)
		return d.findings
	}
	d.checkConfigVersions(files, ctrd)
	driver := d.checkDriver(files)
	var gvisor []*Handler
	for _, h := range allHandlers(files) {
		if h.RuntimeType == RuntimeTypeRunsc || h.RuntimeType == RuntimeTypeGuard {
			gvisor = append(gvisor, h)
		}
	}
	if len(gvisor) == 0 {
		d.add(LevelWarn, "handlers", "add a runsc handler (runtime_type = \""+RuntimeTypeGuard+"\") and a RuntimeClass for it",
			"no gVisor runtime handler in %s", filePaths(files))
		return d.findings
	}
	shimReply := d.checkRunscShim()
	for _, h := range gvisor {
		d.checkHandler(h, cgv, driver, ctrd, shimReply)
	}
	return d.findings
}

func (d *doctor) checkCgroup() cgroupfix.Version {
	v, err := cgroupfix.DetectVersion(d.env.CgroupRoot)
	switch {
	case err != nil:
		d.add(LevelError, "cgroup", "mount cgroupfs at "+d.env.CgroupRoot, "cannot tell the cgroup version: %v", err)
	case v == cgroupfix.V2:
		d.add(LevelOK, "cgroup", "", "cgroup v2 at %s", d.env.CgroupRoot)
	default:
		d.add(LevelInfo, "cgroup", "", "cgroup v1 at %s: runsc reads only the leaf's memory.limit_in_bytes here, on every release (https://github.com/google/gvisor/issues/9580 fixed v2 only)", d.env.CgroupRoot)
	}
	return v
}

func (d *doctor) checkContainerd() version {
	path, err := d.env.LookPath("containerd")
	if err != nil {
		d.add(LevelError, "containerd", "install containerd 1.6 or later", "containerd not found: %v", err)
		return version{}
	}
	out, err := d.env.Run(path, "--version")
	v := parseContainerdVersion(out)
	if err != nil || !v.known() {
		d.add(LevelWarn, "containerd", "", "cannot tell the containerd version from %q: %v", strings.TrimSpace(out), err)
		return version{}
	}
	d.add(LevelOK, "containerd", "", "containerd %s (%s)", v, path)
	return v
}

func (d *doctor) checkConfigVersions(files []*ConfigFile, ctrd version) {
	for _, f := range files {
		switch {
		case ctrd.known() && ctrd.major < 2 && f.Version >= 3:
			d.add(LevelError, "containerd config", "write it as version 2 (plugins.\"io.containerd.grpc.v1.cri\"), or upgrade containerd to 2.x",
				"%s is config version %d, which containerd %s refuses", f.Path, f.Version, ctrd)
		case f.Version == 1:
			d.add(LevelWarn, "containerd config", "containerd config migrate > new.toml (containerd 1.7 and later), review, replace",
				"%s is config version 1 (no version key), deprecated since containerd 1.7", f.Path)
		default:
			d.add(LevelOK, "containerd config", "", "%s: config version %d", f.Path, f.Version)
		}
	}
}

// checkDriver reports the cgroup driver: the runc handler's SystemdCgroup
// option, which kubelet follows too.
func (d *doctor) checkDriver(files []*ConfigFile) string {
	driver := "cgroupfs"
	for _, h := range allHandlers(files) {
		if h.RuntimeType == runtimeTypeRunc {
			if b, _ := h.Options["SystemdCgroup"].(bool); b {
				driver = "systemd"
			}
		}
	}
	d.add(LevelInfo, "cgroup driver", "", "%s (the runc handler's SystemdCgroup)", driver)
	return driver
}

// checkRunscShim finds the runsc shim the guard and the runsc handlers run
// and says how it answers start: "json", "plain" or "" (unknown).
func (d *doctor) checkRunscShim() string {
	path, err := d.env.LookPath(d.env.ShimPath)
	if err != nil {
		d.add(LevelError, "runsc shim", "install gVisor's containerd-shim-runsc-v1 next to containerd", "%s not found: %v", d.env.ShimPath, err)
		return ""
	}
	bi, err := d.env.BuildInfo(path)
	if err != nil {
		d.add(LevelInfo, "runsc shim", "", "%s: no Go build information (%v): its start reply format is unknown", path, err)
		return ""
	}
	f := replyFormat(bi)
	d.add(LevelOK, "runsc shim", "", "%s: start reply %s", path, map[string]string{
		"protobuf": "protobuf (containerd >= 2.3 shim library)", "json": "JSON (containerd v2 shim library)",
		"plain": "plain address", "": "unknown"}[f])
	return f
}

func (d *doctor) checkHandler(h *Handler, cgv cgroupfix.Version, driver string, ctrd version, shimReply string) {
	check := "handler " + h.Name
	guarded := h.RuntimeType == RuntimeTypeGuard
	fix := installFix + h.Name
	if h.BypassesGuard() {
		pathFix := fmt.Sprintf("remove runtime_path from %s and set shim_path = %q in the guard's configuration", h.Key(), h.RuntimePath)
		if guarded {
			d.add(LevelError, check, pathFix, "runtime_type %s, but containerd starts runtime_path %s: the guard never runs", RuntimeTypeGuard, h.RuntimePath)
		} else {
			d.add(LevelWarn, check, pathFix, "runtime_path %s is started whatever runtime_type says: install.sh refuses this handler until it is removed", h.RuntimePath)
		}
	} else if guarded {
		if path, err := d.env.LookPath(guardShimBinary); err != nil {
			d.add(LevelError, check, "install the guard binary on containerd's PATH: install.sh", "runtime_type %s but %s not found: %v", RuntimeTypeGuard, guardShimBinary, err)
		} else {
			d.add(LevelOK, check, "", "goes through runsc-guard (%s)", path)
		}
	}
	opts, err := readRunscOptions(h.ConfigPath())
	if err != nil {
		d.add(LevelError, check, "fix options.ConfigPath of "+h.Key(), "%v", err)
		return
	}
	if opts.badType {
		// gVisor pkg/shim/v1/runsc/options.go: RunscConfig map[string]string.
		d.add(LevelError, check, "write systemd-cgroup = \"true\" (a string) in "+h.ConfigPath(),
			"[runsc_config] systemd-cgroup = %s is not a string: the runsc shim cannot decode it and fails every container", opts.systemdCgroup)
	}
	sdFlag := opts.systemdCgroup == "true"
	date := 0
	if path, err := d.env.LookPath(opts.binary); err != nil {
		d.add(LevelError, check, "install runsc, or fix binary_name in "+h.ConfigPath(), "runsc binary %q not found: %v", opts.binary, err)
	} else {
		out, _ := d.env.Run(path, "--version")
		if date = runsc.Release(out); date == 0 && guarded {
			d.add(LevelInfo, check, "", "runsc %s reports no release (%q)", path, firstLine(out))
		} else if date == 0 {
			d.add(LevelWarn, check, fix+", or run a released runsc (release-YYYYMMDD.N)", "runsc %s reports no release (%q): cannot tell which fixes it has", path, firstLine(out))
		} else {
			d.add(LevelInfo, check, "", "runsc %s: release %d, systemd-cgroup %s", path, date, map[bool]string{true: "on", false: "off"}[sdFlag])
		}
	}

	// containerd 1.6 reads the start reply as a plain address; before 2.3
	// containerd parses no protobuf reply. The guard parses every form and
	// answers containerd plainly.
	if ctrd.known() && ctrd.major == 1 && ctrd.minor < 7 && shimReply == "json" && !guarded {
		d.add(LevelError, check, fix,
			"containerd %s cannot parse the runsc shim's JSON start reply: every pod fails with \"dial unix {\\\"version\\\":2,...}: invalid argument\"", ctrd)
	}
	if ctrd.known() && (ctrd.major < 2 || ctrd.major == 2 && ctrd.minor < 3) && shimReply == "protobuf" && !guarded {
		d.add(LevelError, check, fix,
			"containerd %s cannot parse the runsc shim's protobuf start reply (containerd >= 2.3 shim library): every pod fails to start", ctrd)
	}
	if guarded {
		if driver == "systemd" && cgv == cgroupfix.V2 && date != 0 && date < runsc.ReleaseSystemdFlag {
			d.add(LevelWarn, check, "upgrade runsc", "runsc %d predates systemd-cgroup: the guard can only move the sandbox into the pod slice after it started (https://github.com/google/gvisor/issues/193)", date)
		}
		return
	}

	problems := 0
	if driver == "systemd" && cgv == cgroupfix.V1 {
		problems++
		d.add(LevelError, check, fix,
			"on cgroup v1 every runsc release takes a systemd cgroupsPath for a directory under its own cgroup (containerd.service), systemd-cgroup or not: sandboxes run outside the pod slice and pod memory limits do not hold (runsc/cgroup/cgroup.go new(), https://github.com/google/gvisor/blob/master/runsc/cgroup/cgroup.go)")
	} else if driver == "systemd" && !sdFlag {
		switch {
		case date == 0:
			problems++
			d.add(LevelWarn, check, fix+", or set systemd-cgroup = \"true\" in [runsc_config]",
				"systemd driver without systemd-cgroup on a runsc of unknown release: sandboxes may land in system.slice, outside the pod limit (https://github.com/google/gvisor/issues/10264)")
		case date < runsc.ReleaseSystemdAuto:
			problems++
			d.add(LevelError, check, fix+", or set systemd-cgroup = \"true\" in [runsc_config] of "+orNone(h.ConfigPath()),
				"runsc %d with the systemd driver and no systemd-cgroup puts sandboxes under system.slice, outside the pod slice: pod memory limits do not hold (https://github.com/google/gvisor/issues/193, https://github.com/google/gvisor/issues/10264)", date)
		}
	}
	switch {
	case cgv == cgroupfix.V1:
		problems++
		d.add(LevelWarn, check, fix, "on cgroup v1 runsc sizes sandboxes from the leaf cgroup: --total-memory is the node's RAM and the kernel kills the whole sandbox at the pod limit (https://github.com/google/gvisor/issues/9580)")
	case date != 0 && date < runsc.ReleaseParentLimit:
		problems++
		d.add(LevelWarn, check, fix+", or upgrade runsc to release-20231106.0 or later",
			"runsc %d reads only the leaf memory.max: sandboxes boot with --total-memory = node RAM and the kernel kills the whole sandbox at the pod limit (https://github.com/google/gvisor/issues/9580)", date)
	}
	if problems == 0 {
		d.add(LevelOK, check, "", "runtime_type %s: this runsc and configuration hold pod limits without the guard", h.RuntimeType)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func orNone(p string) string {
	if p == "" {
		return "a new options file (set options.ConfigPath)"
	}
	return p
}

// Doctor is the doctor command.
func Doctor(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("doctor", "[flags]", "Checks cgroups, containerd, its gVisor handlers and runsc, and prints each\n"+
		"finding with its fix. Exit status 1 when a finding is an "+LevelError+".", stderr)
	env := DoctorEnv{Run: runProgram, LookPath: exec.LookPath, BuildInfo: buildinfo.ReadFile}
	fs.StringVar(&env.Config, "config", DefaultContainerdConfig, "containerd configuration `file`")
	fs.StringVar(&env.CgroupRoot, "cgroup-root", "/sys/fs/cgroup", "cgroupfs `dir`")
	guardConfig := guardConfigFlag(fs, "shim_path")
	jsonOut := fs.Bool("json", false, "print JSON")
	if !parseFlags(fs, args) {
		return exitUsage
	}
	cfg, ok := guardConfig()
	if !ok {
		return exitUsage
	}
	env.ShimPath = cfg.ShimPath
	findings := RunDoctor(env)
	if *jsonOut {
		if err := writeJSON(stdout, findings); err != nil {
			fmt.Fprintf(stderr, "doctor: %v\n", err)
			return exitUsage
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, f := range findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Level, f.Check, f.Message)
			if f.Fix != "" {
				fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
			}
		}
		tw.Flush()
	}
	for _, f := range findings {
		if f.Level == LevelError {
			return exitFinding
		}
	}
	return exitOK
}
