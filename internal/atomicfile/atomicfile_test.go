package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name     string
		existing os.FileMode // 0: no file before
		link     bool        // path is a symlink to the file
		want     os.FileMode
	}{
		{name: "new file gets perm", want: 0o640},
		{name: "existing file keeps its mode", existing: 0o600, want: 0o600},
		{name: "written through a symlink", existing: 0o644, link: true, want: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "config.toml")
			if tt.existing != 0 {
				if err := os.WriteFile(file, []byte("old"), tt.existing); err != nil {
					t.Fatal(err)
				}
			}
			path := file
			if tt.link {
				path = filepath.Join(t.TempDir(), "link.toml")
				if err := os.Symlink(file, path); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte("new"), 0o640); err != nil {
				t.Fatalf("Write(%q) = %v, want nil", path, err)
			}
			st, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(file); string(b) != "new" || st.Mode().Perm() != tt.want {
				t.Errorf("Write(%q) left %q mode %v, want %q mode %v", path, b, st.Mode().Perm(), "new", tt.want)
			}
			if tt.link {
				if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("Write(%q) replaced the symlink: %v", path, err)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("Write(%q) left %d entries in %s, want 1 (no temporary file)", path, len(ents), dir)
			}
		})
	}
	if err := Write(filepath.Join(t.TempDir(), "missing", "x"), nil, 0o644); err == nil {
		t.Errorf("Write into a missing directory = nil, want an error")
	}
}

// TestReplaceDoesNotFollow: a symlink planted where a bundle file goes is
// replaced itself; the file it points at is untouched.
func TestReplaceDoesNotFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "outside")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "runsc-guard.json")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if err := Replace(p, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the symlink's target was overwritten: %q", b)
	}
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("%s after Replace: %v, %v; want a regular file, mode 0600", p, st, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "{}" {
		t.Errorf("content %q", b)
	}
}
