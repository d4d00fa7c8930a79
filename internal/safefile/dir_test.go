package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDirHostile: beneath a Dir nothing leaves it or passes a symlink,
// whether through openat2 or the per-component walk of older kernels.
func TestDirHostile(t *testing.T) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) {
			if walk {
				noOpenat2.Store(true)
				defer noOpenat2.Store(false)
			}
			outside := t.TempDir()
			os.WriteFile(filepath.Join(outside, "memory.max"), []byte("1\n"), 0o644)
			root := t.TempDir()
			mk := func(p string) { os.MkdirAll(filepath.Join(root, p), 0o755) }
			mk("a/b")
			os.WriteFile(filepath.Join(root, "a/b/memory.max"), []byte("268435456\n"), 0o644)
			os.WriteFile(filepath.Join(root, "a/big"), make([]byte, 5000), 0o644)
			os.Symlink(outside, filepath.Join(root, "out"))
			os.Symlink("a", filepath.Join(root, "in"))
			os.Symlink(filepath.Join(outside, "memory.max"), filepath.Join(root, "a/link.max"))
			syscall.Mkfifo(filepath.Join(root, "a/fifo"), 0o600)
			d, err := OpenDir(root)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			buf := make([]byte, 0, 16)

			b, err := d.ReadFile("/a/b/memory.max", 4096, buf)
			if err != nil || string(b) != "268435456\n" {
				t.Errorf("ReadFile(/a/b/memory.max) = %q, %v", b, err)
			}
			if b, err := d.ReadFile("../../a/b/memory.max", 4096, nil); err != nil || string(b) != "268435456\n" {
				t.Errorf("ReadFile(../../a/b/memory.max) = %q, %v: want it cleaned to a/b/memory.max", b, err)
			}
			for _, p := range []string{"out/memory.max", "in/b/memory.max", "a/link.max"} {
				if _, err := d.ReadFile(p, 4096, nil); !errors.Is(err, ErrEscape) {
					t.Errorf("ReadFile(%s) = %v, want ErrEscape", p, err)
				}
			}
			if d.IsDir("out") || d.IsDir("in") || !d.IsDir("a/b") || d.IsDir("a/b/memory.max") {
				t.Errorf("IsDir: out %v in %v a/b %v file %v, want only a/b", d.IsDir("out"), d.IsDir("in"), d.IsDir("a/b"), d.IsDir("a/b/memory.max"))
			}
			if _, err := d.ReadFile("a/missing", 4096, nil); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("ReadFile(a/missing) = %v, want ErrNotExist", err)
			}
			if _, err := d.ReadFile("a/big", 4096, nil); !errors.Is(err, ErrTooLarge) {
				t.Errorf("ReadFile(a/big) = %v, want ErrTooLarge", err)
			}
			if _, err := d.ReadFile(strings.Repeat("a/", MaxPathParts+1), 4096, nil); !errors.Is(err, ErrEscape) {
				t.Errorf("ReadFile of %d parts = %v, want ErrEscape", MaxPathParts+2, err)
			}
			done := make(chan error, 1)
			go func() { _, err := d.ReadFile("a/fifo", 4096, nil); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) {
					t.Errorf("ReadFile(a/fifo) = %v, want ErrNotRegular", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ReadFile of a FIFO hung")
			}
		})
	}
}

// TestDirCgroupfs: on a real cgroup mount (read only; skipped where this
// machine has none) ReadFile takes the three-call path and reads what
// os.ReadFile reads, small buffer or not; a directory is refused as not
// regular, a missing file is fs.ErrNotExist, a file over max ErrTooLarge.
func TestDirCgroupfs(t *testing.T) {
	var root, file string
	for _, c := range []struct{ root, file string }{
		{"/sys/fs/cgroup", "cgroup.controllers"},
		{"/sys/fs/cgroup/memory", "memory.limit_in_bytes"},
		{"/sys/fs/cgroup/cpu,cpuacct", "cpu.cfs_period_us"},
	} {
		if d, err := OpenDir(c.root); err == nil {
			ok := d.cgroupfs
			d.Close()
			if _, err := os.Stat(filepath.Join(c.root, c.file)); ok && err == nil {
				root, file = c.root, c.file
				break
			}
		}
	}
	if root == "" {
		t.Skip("no cgroup filesystem mounted here")
	}
	d, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 8, 64} {
		got, err := d.ReadFile(file, 4000, make([]byte, 0, size))
		if err != nil || string(got) != string(want) {
			t.Errorf("ReadFile(%s) with a %d-byte buffer = %q, %v; want %q", file, size, got, err, want)
		}
		if _, ok, _ := d.readCgroupFile(file, 4000, make([]byte, 0, size)); !ok {
			t.Errorf("readCgroupFile(%s) left it to the general path", file)
		}
	}
	if _, err := d.ReadFile(".", 4000, nil); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadFile(.) = %v, want ErrNotRegular", err)
	}
	if _, err := d.ReadFile("no-such-file", 4000, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(no-such-file) = %v, want fs.ErrNotExist", err)
	}
	if len(want) > 1 {
		if _, err := d.ReadFile(file, 1, nil); !errors.Is(err, ErrTooLarge) {
			t.Errorf("ReadFile(%s, max 1) = %v, want ErrTooLarge", file, err)
		}
	}
}

// cgroupFile is a small file on a real cgroup mount here, for the
// benchmarks (skipped where there is none).
func cgroupFile(b *testing.B) (root, file string) {
	for _, c := range []struct{ root, file string }{
		{"/sys/fs/cgroup", "cgroup.controllers"},
		{"/sys/fs/cgroup/memory", "memory.limit_in_bytes"},
	} {
		if _, err := os.Stat(filepath.Join(c.root, c.file)); err == nil {
			return c.root, c.file
		}
	}
	b.Skip("no cgroup filesystem mounted here")
	return "", ""
}

// BenchmarkReadFileCgroupfs: one limit file read through a Dir on a real
// cgroup mount, by the cgroupfs path and by the general one (fstat, and a
// read to find the end); BenchmarkReadFileCgroupfsFloor is the raw
// openat2, read, close of the same file.
func BenchmarkReadFileCgroupfs(b *testing.B) {
	root, file := cgroupFile(b)
	d, err := OpenDir(root)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if !d.cgroupfs {
		b.Fatalf("%s is not seen as a cgroup filesystem", root)
	}
	for _, general := range []bool{false, true} {
		name := "cgroupfs"
		if general {
			name = "general"
		}
		b.Run(name, func(b *testing.B) {
			d.cgroupfs = !general
			defer func() { d.cgroupfs = true }()
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.ReadFile(file, 4000, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadFileCgroupfsFloor(b *testing.B) {
	root, file := cgroupFile(b)
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		f, err := unix.Openat2(fd, file, how)
		if err != nil {
			b.Fatal(err)
		}
		unix.Read(f, buf)
		unix.Close(f)
	}
}
