// Package safefile opens the files the guard reads from trees that other
// root processes made (cgroupfs, /proc, containers' bundles) so that no such
// file can hang it or feed it more than a bound: never through a symlink as
// the last component, never a FIFO or device, never past a size cap.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
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

// ReadFile reads a regular file of at most max bytes.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: %w: over %d bytes", path, ErrTooLarge, max)
	}
	return b, nil
}
