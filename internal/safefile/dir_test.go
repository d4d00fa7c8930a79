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
