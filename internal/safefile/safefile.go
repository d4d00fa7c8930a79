// Package safefile opens the files the guard reads from trees that other
// root processes made (cgroupfs, /proc, containers' bundles) so that no such
// file can hang it or feed it more than a bound: never through a symlink as
// the last component, never a FIFO or device, never past a size cap.
package safefile

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotRegular: the path names a FIFO, socket, device or directory,
	// or (as its last component) a symlink.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file is longer than the caller reads.
	ErrTooLarge = errors.New("file too large")
)

// Open opens a regular file for reading. O_NONBLOCK keeps a FIFO from
// blocking the open (and is without effect on a regular file), O_NOFOLLOW
// refuses a symlink as the last component, and anything but a regular file
// is refused once open.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("open %s: %w: a symlink", path, ErrNotRegular)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w: %s", path, ErrNotRegular, st.Mode().Type())
	}
	return f, nil
}

// ReadFile reads a regular file of at most max bytes, opened as Open
// opens it (raw system calls: no *os.File for a file read once).
func ReadFile(path string, max int64) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("open %s: %w: a symlink", path, ErrNotRegular)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return readRegular(fd, "", path, max, nil)
}
