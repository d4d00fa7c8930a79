package cgroupfix

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Driver is the cgroup driver a cgroupsPath was written for.
type Driver int

// The driver constants carry a Driver prefix because Systemd names the
// D-Bus interface MoveToScope takes.
const (
	// DriverCgroupfs is a plain directory path relative to the cgroupfs root,
	// e.g. "/kubepods/burstable/pod<uid>/<id>".
	DriverCgroupfs Driver = iota
	// DriverSystemd is the "slice:prefix:name" form kubelet and containerd emit
	// with the systemd cgroup driver.
	DriverSystemd
)

// String returns "cgroupfs" or "systemd".
func (d Driver) String() string {
	switch d {
	case DriverCgroupfs:
		return "cgroupfs"
	case DriverSystemd:
		return "systemd"
	}
	return fmt.Sprintf("Driver(%d)", int(d))
}

// CgroupsPath is a parsed OCI linux.cgroupsPath.
type CgroupsPath struct {
	// Driver says which form Raw was in.
	Driver Driver
	// Raw is the cgroupsPath exactly as given.
	Raw string
	// Slice is the systemd parent slice unit ("system.slice" when the
	// path left it empty). Empty for cgroupfs paths.
	Slice string
	// Prefix is the systemd scope prefix (e.g. "cri-containerd").
	Prefix string
	// Name is the systemd name part (the container id, or a slice name).
	Name string
	// Dir is the leaf cgroup directory relative to the cgroupfs root,
	// always absolute ("/" first) and cleaned.
	Dir string
	// Parent is the pod cgroup directory: the expanded Slice for systemd
	// paths, filepath.Dir(Dir) for cgroupfs paths.
	Parent string
}

// Unit returns the systemd unit that owns Dir: "<prefix>-<name>.scope", or
// Name itself when it is a slice. Empty for cgroupfs paths.
func (c CgroupsPath) Unit() string {
	if c.Driver != DriverSystemd {
		return ""
	}
	return systemdUnitName(c.Prefix, c.Name)
}

func systemdUnitName(prefix, name string) string {
	if strings.HasSuffix(name, sliceSuffix) {
		return name
	}
	// Same composition as runc and runsc --systemd-cgroup (an empty prefix
	// gives "-<name>.scope"), so that we name the directory they create.
	return prefix + "-" + name + scopeSuffix
}

const (
	sliceSuffix  = ".slice"
	scopeSuffix  = ".scope"
	defaultSlice = "system.slice"
	// maxUnitName is systemd's UNIT_NAME_MAX minus the terminating NUL.
	maxUnitName = 255
)

// IsSystemdPath reports whether p is in the systemd "slice:prefix:name"
// form: exactly three colon-separated parts, no "/" anywhere, and a first
// part that is empty or names a slice.
//
// Old runsc without the systemd-cgroup flag treats such a path as a
// relative directory and creates "system.slice/<p>" outside the pod slice
// (https://github.com/google/gvisor/issues/193,
// https://github.com/google/gvisor/issues/10264); runsc detects the form on
// its own only since release-20260615.0.
func IsSystemdPath(p string) bool {
	if strings.Contains(p, "/") || strings.Count(p, ":") != 2 {
		return false
	}
	slice, _, _ := strings.Cut(p, ":")
	return slice == "" || strings.HasSuffix(slice, sliceSuffix)
}

// ParseCgroupsPath parses an OCI linux.cgroupsPath.
//
// A systemd path "slice:prefix:name" gives Dir = ExpandSlice(slice) + "/" +
// "<prefix>-<name>.scope" (or + "/" + name when name is itself a slice) and
// Parent = ExpandSlice(slice); an empty slice means "system.slice".
// Anything else is a cgroupfs path, relative to the cgroupfs root whether or
// not it starts with "/". Paths with a ".." component, a NUL byte, or
// malformed slice or unit names are refused: kubelet never writes them, so
// they are hostile or broken, and guessing would risk reading the limit of
// the wrong cgroup.
func ParseCgroupsPath(p string) (CgroupsPath, error) {
	c, err := parseCgroupsPath(p)
	if err == nil && (c.Parent == "/" || c.Dir == "/") {
		// A single-part path ("/etc", ".", "-.slice:x:y") would make the
		// root cgroup the pod's, and every process of the node "inside the
		// pod": no pod cgroup is named, so nothing can be held to it.
		return CgroupsPath{}, fmt.Errorf("%w: %q names no pod cgroup below the cgroup root", ErrInvalidPath, p)
	}
	return c, err
}

func parseCgroupsPath(p string) (CgroupsPath, error) {
	if p == "" {
		return CgroupsPath{}, ErrEmptyPath
	}
	if strings.IndexByte(p, 0) >= 0 {
		return CgroupsPath{}, fmt.Errorf("%w: %q contains NUL", ErrInvalidPath, p)
	}
	if IsSystemdPath(p) {
		return parseSystemdPath(p)
	}
	if strings.Count(p, ":") == 2 && !strings.HasPrefix(p, "/") {
		// Looks like a systemd triple but is not one (e.g. "a/b.slice:x:y"
		// or a slice without ".slice"): refuse rather than create a
		// directory with colons in it, which is exactly the misplacement
		// this project exists to undo.
		return CgroupsPath{}, fmt.Errorf("%w: %q: malformed systemd path (want slice:prefix:name)", ErrInvalidPath, p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return CgroupsPath{}, fmt.Errorf("%w: %q has a \"..\" component", ErrPathEscape, p)
		}
	}
	dir := filepath.Clean("/" + p)
	return CgroupsPath{
		Driver: DriverCgroupfs,
		Raw:    p,
		Dir:    dir,
		Parent: filepath.Dir(dir),
	}, nil
}

func parseSystemdPath(p string) (CgroupsPath, error) {
	parts := strings.SplitN(p, ":", 3)
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = defaultSlice
	}
	parent, err := ExpandSlice(slice)
	if err != nil {
		return CgroupsPath{}, fmt.Errorf("parse cgroups path %q: %w", p, err)
	}
	if name == "" {
		return CgroupsPath{}, fmt.Errorf("%w: %q: empty name", ErrInvalidPath, p)
	}
	unit := systemdUnitName(prefix, name)
	if err := validUnitName(unit); err != nil {
		return CgroupsPath{}, fmt.Errorf("%w: %q: %v", ErrInvalidPath, p, err)
	}
	if strings.HasSuffix(name, sliceSuffix) {
		if _, err := ExpandSlice(name); err != nil {
			return CgroupsPath{}, fmt.Errorf("parse cgroups path %q: %w", p, err)
		}
	}
	return CgroupsPath{
		Driver: DriverSystemd,
		Raw:    p,
		Slice:  slice,
		Prefix: prefix,
		Name:   name,
		Dir:    filepath.Join(parent, unit),
		Parent: parent,
	}, nil
}

// validUnitName checks the characters systemd allows in a unit name
// ([A-Za-z0-9:_.\-\\]) and its length. Together with the suffix this also
// rules out "/", NUL, "." and "..".
func validUnitName(u string) error {
	if len(u) > maxUnitName {
		return fmt.Errorf("unit name longer than %d bytes", maxUnitName)
	}
	for i := 0; i < len(u); i++ {
		if !unitChar(u[i]) {
			return fmt.Errorf("unit name %q: character %q not allowed", u, u[i])
		}
	}
	return nil
}

func unitChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == ':' || c == '_' || c == '.' || c == '-' || c == '\\'
}

// ExpandSlice turns a systemd slice unit name into its cgroup directory,
// relative to the cgroupfs root: "a-b-c.slice" is
// "/a.slice/a-b.slice/a-b-c.slice" and the root slice "-.slice" is "/".
// It refuses what systemd refuses: a missing ".slice" suffix, "/", an empty
// name, "--", and a leading or trailing "-".
func ExpandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, sliceSuffix)
	if !ok {
		return "", fmt.Errorf("%w: %q: no %q suffix", ErrInvalidSlice, slice, sliceSuffix)
	}
	if name == "-" {
		return "/", nil
	}
	switch {
	case name == "":
		return "", fmt.Errorf("%w: %q: empty name", ErrInvalidSlice, slice)
	case strings.HasPrefix(name, "-"), strings.HasSuffix(name, "-"):
		return "", fmt.Errorf("%w: %q: leading or trailing \"-\"", ErrInvalidSlice, slice)
	case strings.Contains(name, "--"):
		return "", fmt.Errorf("%w: %q: \"--\"", ErrInvalidSlice, slice)
	}
	if err := validUnitName(slice); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidSlice, err)
	}
	var b strings.Builder
	b.Grow(len(name)*2 + 16)
	for i := 0; i < len(name); i++ {
		if name[i] == '-' {
			b.WriteByte('/')
			b.WriteString(name[:i])
			b.WriteString(sliceSuffix)
		}
	}
	b.WriteByte('/')
	b.WriteString(slice)
	return b.String(), nil
}
