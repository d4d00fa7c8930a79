package safefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrEscape: a path beneath a Dir climbs out of it or passes through a
// symlink.
var ErrEscape = errors.New("path leaves its root or passes through a symlink")

// Bounds on a path opened beneath a Dir: Linux's PATH_MAX, and more parts
// than any cgroup tree or bundle has.
const (
	MaxPathLen   = 4096
	MaxPathParts = 64
)

// Dir is an open directory beneath which files are opened from its handle:
// no path leaves it, none passes through a symlink (openat2(2) with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS; on kernels
// before 5.6, which lack openat2, one openat(O_NOFOLLOW) per component).
// The directory itself is opened by its path, symlinks and all: it is the
// caller's trusted root (/sys/fs/cgroup, a controller's directory).
type Dir struct {
	fd   int
	name string
}

// OpenDir opens the directory path as a Dir.
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Dir{fd: fd, name: path}, nil
}

// Name is the path the Dir was opened by.
func (d *Dir) Name() string { return d.name }

// Close releases the handle.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Path returns the host path of rel beneath d, for messages.
func (d *Dir) Path(rel string) string { return filepath.Join(d.name, rel) }

// clean makes rel a relative path with no "..": "/a/b" and "a/b" are the
// same, "" and "/" are the Dir itself (".").
func clean(rel string) (string, error) {
	if strings.IndexByte(rel, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in %q", ErrEscape, rel)
	}
	if len(rel) > MaxPathLen || strings.Count(rel, "/") > MaxPathParts {
		return "", fmt.Errorf("%w: %d bytes in %d parts, at most %d bytes and %d parts", ErrEscape,
			len(rel), strings.Count(rel, "/")+1, MaxPathLen, MaxPathParts)
	}
	rel = strings.TrimPrefix(rel, "/")
	if isClean(rel) {
		return rel, nil
	}
	c := strings.TrimPrefix(filepath.Clean("/"+rel), "/")
	if c == "" {
		return ".", nil
	}
	return c, nil
}

// isClean reports whether rel (no leading "/") is already what clean would
// make of it: non-empty parts, none "." or "..".
func isClean(rel string) bool {
	if rel == "" {
		return false
	}
	for part := range strings.SplitSeq(rel, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

// noOpenat2 is set once openat2 turned out to be missing (ENOSYS).
var noOpenat2 atomic.Bool

// openat opens rel beneath d with flags (O_CLOEXEC and O_NOFOLLOW added).
func (d *Dir) openat(rel string, flags int) (int, error) {
	rel, err := clean(rel)
	if err != nil {
		return -1, err
	}
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	if !noOpenat2.Load() {
		fd, err := openat2(d.fd, rel, flags)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			noOpenat2.Store(true)
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return -1, fmt.Errorf("%w: %s", ErrEscape, d.Path(rel))
		default:
			return -1, &os.PathError{Op: "open", Path: d.Path(rel), Err: err}
		}
	}
	return d.walk(rel, flags)
}

// openat2 is unix.Openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS, without its allocation: the NUL-terminated path
// is built on the stack when it is short, as every cgroup file's is.
func openat2(dirfd int, rel string, flags int) (int, error) {
	var pb [512]byte
	var p []byte
	if len(rel) < len(pb) {
		p = pb[:len(rel)+1]
		copy(p, rel)
		p[len(rel)] = 0
	} else {
		p = append([]byte(rel), 0)
	}
	how := unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(&p[0])),
			uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return -1, e
	}
}

// walk is openat without openat2: every directory on the way is opened
// with O_NOFOLLOW|O_DIRECTORY from the one before, so a symlink anywhere
// fails; clean already removed "..".
func (d *Dir) walk(rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	at := d.fd
	for i, p := range parts {
		last := i == len(parts)-1
		fl := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			fl = flags
		}
		fd, err := unix.Openat(at, p, fl, 0)
		if at != d.fd {
			unix.Close(at)
		}
		if err != nil {
			if errors.Is(err, unix.ELOOP) || (!last && errors.Is(err, unix.ENOTDIR)) {
				return -1, fmt.Errorf("%w: %s", ErrEscape, d.Path(rel))
			}
			return -1, &os.PathError{Op: "open", Path: d.Path(rel), Err: err}
		}
		at = fd
	}
	return at, nil
}

// ReadFile reads the regular file rel beneath d, of at most max bytes,
// into buf's storage when it fits: opened non-blocking and refused unless
// regular, as ReadFile does a path. It makes no *os.File: reading a
// cgroup's few small files is then openat2, fstat, read and close.
func (d *Dir) ReadFile(rel string, max int64, buf []byte) ([]byte, error) {
	fd, err := d.openat(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return readRegular(fd, d.name, rel, max, buf)
}

// readRegular reads the open fd (named dir/rel in errors), closing it:
// refused unless a regular file, at most max bytes, into buf's storage
// when it fits.
func readRegular(fd int, dir, rel string, max int64, buf []byte) ([]byte, error) {
	defer unix.Close(fd)
	name := func() string { return filepath.Join(dir, rel) }
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name(), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("open %s: %w: mode %#o", name(), ErrNotRegular, st.Mode&unix.S_IFMT)
	}
	// A regular file that reports its size (tmpfs, ext4; kernfs reports
	// none) is read to that size; otherwise to EOF.
	size := st.Size
	b := buf[:0]
	for int64(len(b)) <= max {
		if size > 0 && int64(len(b)) >= size {
			return b, nil
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name(), Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
	return nil, fmt.Errorf("read %s: %w: over %d bytes", name(), ErrTooLarge, max)
}

// IsDir reports whether rel beneath d is a directory (reached without a
// symlink).
func (d *Dir) IsDir(rel string) bool {
	fd, err := d.openat(rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
