package cgroupfix

import (
	"errors"
	"fmt"

	"github.com/runsc-guard/runsc-guard/internal/safefile"
)

// Sentinel errors. Check them with errors.Is; the returned errors wrap them
// with the path or value that was being handled.
var (
	// ErrEmptyPath is returned for an empty cgroupsPath.
	ErrEmptyPath = errors.New("empty cgroups path")
	// ErrInvalidPath is returned for a cgroupsPath that is neither a valid
	// cgroupfs path nor a valid systemd "slice:prefix:name" triple.
	ErrInvalidPath = errors.New("invalid cgroups path")
	// ErrInvalidSlice is returned for a systemd slice name that systemd
	// itself would reject.
	ErrInvalidSlice = errors.New("invalid systemd slice name")
	// ErrPathEscape is returned when a path would resolve outside the root
	// it is joined to, passes through a symlink where none may be, or
	// cannot be proven to stay inside it (safefile.ErrEscape).
	ErrPathEscape = safefile.ErrEscape
	// ErrUnknownHierarchy is returned when a directory is neither a cgroup
	// v2 mount nor a cgroup v1 hierarchy with a memory controller.
	ErrUnknownHierarchy = errors.New("unknown cgroup hierarchy")
	// ErrZeroLimit is the cause inside a *ParseError for a limit file that
	// reads 0: a real (if absurd) limit that the zero value of Limits
	// cannot express, so it is refused rather than read as "unlimited".
	ErrZeroLimit = errors.New("zero limit")
	// ErrNegative is the cause inside a *ParseError for a negative value
	// where none is allowed.
	ErrNegative = errors.New("negative value")
	// ErrNotSandbox is returned by ParseSandboxCmdline for a command line
	// that has no "boot" subcommand.
	ErrNotSandbox = errors.New("not a runsc sandbox command line")
	// ErrSandboxNotFound is returned by FindSandbox when no runsc-sandbox
	// process boots the container.
	ErrSandboxNotFound = errors.New("runsc sandbox process not found")
	// ErrMultipleSandboxes is returned by FindSandbox when more than one
	// runsc-sandbox process boots the same container.
	ErrMultipleSandboxes = errors.New("more than one runsc sandbox process")
	// ErrInvalidArgument is returned for arguments a caller should never
	// pass (no pids, a non-positive pid, a unit name that is not a scope).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrScopeJobFailed is returned by MoveToScope when systemd reports a
	// job result other than "done".
	ErrScopeJobFailed = errors.New("systemd scope job failed")
	// ErrScopeTimeout is returned by MoveToScope when the job result does
	// not arrive before the context ends.
	ErrScopeTimeout = errors.New("timed out waiting for systemd scope job")
	// ErrNoCgroup: a cgroup directory that should exist does not.
	ErrNoCgroup = errors.New("cgroup does not exist")
)

// ParseError describes a value that could not be parsed, in the manner of
// opencontainers/cgroups fscommon.ParseError.
type ParseError struct {
	// File is the file (or flag, or annotation) the value came from.
	File string
	// Value is the offending value, truncated to a readable length.
	Value string
	// Err is the underlying cause (a strconv error, ErrNegative, ...).
	Err error
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("parse %s: value %q: %v", e.File, e.Value, e.Err)
}

// Unwrap returns the cause.
func (e *ParseError) Unwrap() error { return e.Err }

// maxErrValue bounds ParseError.Value so that a hostile file cannot make an
// error message (and the log line that carries it) arbitrarily large.
const maxErrValue = 64

func newParseError(file, value string, err error) *ParseError {
	if len(value) > maxErrValue {
		value = value[:maxErrValue] + "..."
	}
	return &ParseError{File: file, Value: value, Err: err}
}
