// Package config is runsc-guard's own configuration file
// (/etc/containerd/runsc-guard.toml): what the guard delegates to and how
// strictly it enforces pod limits.
package config

import (
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

const (
	// DefaultPath is where the guard reads its configuration; the
	// RUNSC_GUARD_CONFIG environment variable of containerd overrides it.
	DefaultPath = "/etc/containerd/runsc-guard.toml"
	// Env names the environment variable that overrides DefaultPath.
	Env             = "RUNSC_GUARD_CONFIG"
	defaultShimPath = "containerd-shim-runsc-v1"
)

// Errors of Load and ResolveShim, checked with errors.Is.
var (
	// ErrBadConfig: the guard's configuration file is invalid.
	ErrBadConfig = errors.New("invalid runsc-guard configuration")
	// ErrDelegateIsGuard: the configured runsc shim path resolves to the
	// guard itself, which would recurse forever.
	ErrDelegateIsGuard = errors.New("shim_path points at runsc-guard itself")
)

// Policy says what the guard does when it cannot make the pod limit hold.
type Policy string

const (
	// PolicyEnforce fails the sandbox Create and leaves nothing running.
	PolicyEnforce Policy = "enforce"
	// PolicyWarn lets the sandbox run and logs a warning.
	PolicyWarn Policy = "warn"
)

// Config is the guard's own configuration (/etc/containerd/runsc-guard.toml).
// A missing file means all defaults.
type Config struct {
	// ShimPath is the runsc shim the guard delegates to: an absolute path or
	// a name looked up in PATH. Default "containerd-shim-runsc-v1".
	ShimPath string `toml:"shim_path"`
	// Policy is "enforce" (default) or "warn".
	Policy Policy `toml:"policy"`
	// UseSandboxAnnotations lets the CRI annotation
	// io.kubernetes.cri.sandbox-memory (and -cpu-quota/-period) limit a pod
	// that has no cgroup limit of its own (kubelet cgroupsPerQOS: false).
	// Default false: the annotation leaves out pod overhead and unlimited
	// containers, so it is only recorded and compared.
	UseSandboxAnnotations bool `toml:"use_sandbox_annotations"`
	// AddRunscFlags lets the guard add systemd-cgroup and
	// cpu-num-from-quota to a container's runsc options (default true).
	// With false the guard never touches runsc options, and a sandbox
	// that old runsc puts outside the pod is fixed only by the move.
	AddRunscFlags bool `toml:"add_runsc_flags"`
	// CgroupRoot is the cgroupfs mount. Default "/sys/fs/cgroup".
	CgroupRoot string `toml:"cgroup_root"`
	// ProcRoot is the procfs mount. Default "/proc".
	ProcRoot string `toml:"proc_root"`
	// ProbeCache keeps what the guard learnt by running runsc (its
	// release, the flags it knows) across the guard's processes, one per
	// pod; "" asks runsc afresh in each. Default
	// "/run/runsc-guard/probes.json".
	ProbeCache string `toml:"probe_cache"`
	// Follow is how often each pod's guard re-reads the pod's cgroup
	// limits and makes the cgroups below it follow a resize, besides
	// around every Update of one of its containers: a Go duration ("10s",
	// the default; "0" only around Updates).
	Follow string `toml:"follow_interval"`
}

// DefaultFollowInterval is follow_interval's default.
const DefaultFollowInterval = 10 * time.Second

// FollowInterval returns follow_interval (0: only around Updates).
func (c Config) FollowInterval() time.Duration {
	d, err := parseFollow(c.Follow)
	if err != nil {
		return DefaultFollowInterval // Load refused it; a Config built in code
	}
	return d
}

func parseFollow(s string) (time.Duration, error) {
	if s == "" {
		return DefaultFollowInterval, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || (d > 0 && d < time.Second) {
		return 0, fmt.Errorf("follow_interval %q: want a duration of at least 1s (\"10s\"), or \"0\"", s)
	}
	return d, nil
}

// Default returns the configuration used when no file exists.
func Default() Config {
	return Config{
		ShimPath:      defaultShimPath,
		Policy:        PolicyEnforce,
		AddRunscFlags: true,
		CgroupRoot:    "/sys/fs/cgroup",
		ProcRoot:      "/proc",
		ProbeCache:    "/run/runsc-guard/probes.json",
	}
}

// Path returns the configuration file the guard reads.
func Path() string {
	if p := os.Getenv(Env); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads path over the defaults. A missing file is not an error;
// an unreadable or invalid one is, so a typo never silently weakens policy.
func Load(path string) (Config, error) {
	c := Default()
	b, err := safefile.ReadFile(path, 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	d := toml.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrBadConfig, path, err)
	}
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrBadConfig, path, err)
	}
	return c, nil
}

func (c *Config) validate() error {
	if c.ShimPath == "" {
		c.ShimPath = defaultShimPath
	}
	if c.Policy == "" {
		c.Policy = PolicyEnforce
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	switch c.Policy {
	case PolicyEnforce, PolicyWarn:
	default:
		return fmt.Errorf("policy %q: want %q or %q", c.Policy, PolicyEnforce, PolicyWarn)
	}
	if _, err := parseFollow(c.Follow); err != nil {
		return err
	}
	return nil
}

// ResolveShim returns the absolute path of the runsc shim and refuses the
// guard itself.
func (c Config) ResolveShim() (string, error) {
	p, err := exec.LookPath(c.ShimPath)
	if err != nil {
		return "", fmt.Errorf("find runsc shim %q: %w", c.ShimPath, err)
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", fmt.Errorf("find runsc shim %q: %w", c.ShimPath, err)
	}
	if self, err := os.Executable(); err == nil && sameFile(self, p) {
		return "", fmt.Errorf("%w: %s", ErrDelegateIsGuard, p)
	}
	return p, nil
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}
