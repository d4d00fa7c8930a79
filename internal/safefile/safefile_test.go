package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestReadFileHostile(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "memory.max")
	os.WriteFile(reg, []byte("268435456\n"), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(reg, link)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 100), 0o644)

	if b, err := ReadFile(reg, 64); err != nil || string(b) != "268435456\n" {
		t.Errorf("regular file: %q, %v", b, err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(fifo, 64); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("FIFO: %v, want ErrNotRegular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
	for name, p := range map[string]string{"symlink": link, "directory": dir} {
		if _, err := ReadFile(p, 64); !errors.Is(err, ErrNotRegular) {
			t.Errorf("%s: %v, want ErrNotRegular", name, err)
		}
	}
	if _, err := ReadFile(big, 64); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the cap: %v, want ErrTooLarge", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "none"), 64); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v, want ErrNotExist", err)
	}
}
