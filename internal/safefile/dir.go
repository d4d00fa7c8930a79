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
	// cgroupfs: the directory is on a cgroup filesystem (v1 or v2), whose
	// files are all regular (kernfs has no FIFOs, devices or sockets) and
	// answer a read with all they hold up to the buffer's size.
	cgroupfs bool
}

// OpenDir opens the directory path as a Dir.
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	d := &Dir{fd: fd, name: path}
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) == nil {
		d.cgroupfs = fs.Type == unix.CGROUP2_SUPER_MAGIC || fs.Type == unix.CGROUP_SUPER_MAGIC
	}
	return d, nil
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
	return openat2x(dirfd, rel, flags, unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
}

// openat2x is openat2 with the RESOLVE_ flags resolve.
func openat2x(dirfd int, rel string, flags int, resolve uint64) (int, error) {
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
		Resolve: resolve,
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
	if d.cgroupfs && max < pageSize && !noOpenat2.Load() {
		if b, ok, err := d.readCgroupFile(rel, max, buf); ok {
			return b, err
		}
	}
	fd, err := d.openat(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return readRegular(fd, d.name, rel, max, buf)
}

// pageSize bounds the files readCgroupFile reads: kernfs answers one read
// with up to a page of what a file holds, so below that a short read is
// its end.
const pageSize = 4096

// readCgroupFile is ReadFile's path on a cgroup filesystem, three system
// calls (openat2, read, close) where the general one takes five (fstat,
// and a read that finds the end, as kernfs reports no size): opened with
// RESOLVE_NO_XDEV as well, the file is on the same cgroup mount, hence
// regular. ok is false when the file is on another mount (openat2 says
// EXDEV, as it does for an escape too): the general path then decides.
func (d *Dir) readCgroupFile(rel string, max int64, buf []byte) (b []byte, ok bool, err error) {
	c, err := clean(rel)
	if err != nil {
		return nil, true, err
	}
	fd, err := openat2x(d.fd, c, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW,
		unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS|unix.RESOLVE_NO_XDEV)
	switch {
	case err == nil:
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS):
		return nil, false, nil
	case errors.Is(err, unix.ELOOP):
		return nil, true, fmt.Errorf("%w: %s", ErrEscape, d.Path(c))
	default:
		return nil, true, &os.PathError{Op: "open", Path: d.Path(c), Err: err}
	}
	defer unix.Close(fd)
	b = buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		space := cap(b) - len(b)
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if errors.Is(err, unix.EISDIR) {
			return nil, true, fmt.Errorf("open %s: %w: a directory", d.Path(c), ErrNotRegular)
		}
		if err != nil {
			return nil, true, &os.PathError{Op: "read", Path: d.Path(c), Err: err}
		}
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			return nil, true, fmt.Errorf("read %s: %w: over %d bytes", d.Path(c), ErrTooLarge, max)
		}
		if n < space {
			return b, true, nil
		}
	}
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
