package cgroupfix

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecureJoin(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	writeTree(t, base, map[string]string{
		"root/kubepods/burstable/pod1/": "",
		"root/real/":                    "",
		"outside/secret/memory.max":     "max",
	})
	links := map[string]string{
		"root/escape":        outside,                     // absolute, out
		"root/kubepods/up":   "../../outside",             // relative, out
		"root/inside":        "real",                      // relative, in
		"root/abs-inside":    filepath.Join(root, "real"), // absolute, in
		"root/dangling":      filepath.Join(outside, "nope"),
		"root/dangling-rel":  "../outside/nope",
		"root/kubepods/loop": "loop",
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(base, l)); err != nil {
			t.Fatal(err)
		}
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, rel, want string
		err             error
	}{
		{"existing", "/kubepods/burstable/pod1", filepath.Join(realRoot, "kubepods/burstable/pod1"), nil},
		{"missing leaf", "kubepods/burstable/pod1/c1", filepath.Join(realRoot, "kubepods/burstable/pod1/c1"), nil},
		{"missing deep", "/a/b/c", filepath.Join(realRoot, "a/b/c"), nil},
		{"root itself", "/", realRoot, nil},
		{"empty", "", realRoot, nil},
		{"lexical dotdot clamped", "/../../etc/passwd", filepath.Join(realRoot, "etc/passwd"), nil},
		{"absolute outside path is rooted", "/tmp", filepath.Join(realRoot, "tmp"), nil},
		{"symlink inside", "/inside/x", filepath.Join(realRoot, "real/x"), nil},
		{"absolute symlink inside", "/abs-inside", filepath.Join(realRoot, "real"), nil},
		{"symlink out absolute", "/escape/secret", "", ErrPathEscape},
		{"symlink out absolute, missing tail", "/escape/new/dir", "", ErrPathEscape},
		{"symlink out relative", "/kubepods/up/secret", "", ErrPathEscape},
		{"dangling symlink", "/dangling/x", "", ErrPathEscape},
		{"dangling relative symlink", "/dangling-rel", "", ErrPathEscape},
		{"NUL", "/a\x00b", "", ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SecureJoin(root, tt.rel)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("SecureJoin(root, %q) = %q, %v, want error %v", tt.rel, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SecureJoin(root, %q) error = %v, want nil", tt.rel, err)
			}
			if got != tt.want {
				t.Errorf("SecureJoin(root, %q) = %q, want %q", tt.rel, got, tt.want)
			}
			if !Within(realRoot, got) {
				t.Errorf("SecureJoin(root, %q) = %q, outside %q", tt.rel, got, realRoot)
			}
		})
	}

	t.Run("symlink loop is an error", func(t *testing.T) {
		if got, err := SecureJoin(root, "/kubepods/loop/x"); err == nil {
			t.Errorf("SecureJoin(root, %q) = %q, nil, want an error", "/kubepods/loop/x", got)
		}
	})
	t.Run("missing root", func(t *testing.T) {
		missing := filepath.Join(base, "no-such-root")
		got, err := SecureJoin(missing, "/a/../b")
		if want := filepath.Join(missing, "b"); err != nil || got != want {
			t.Errorf("SecureJoin(%q, %q) = %q, %v, want %q, nil", missing, "/a/../b", got, err, want)
		}
	})
}

// TestSecureJoinBounds: a path past PATH_MAX or deeper than any cgroup
// tree is refused at once (it used to cost time quadratic in its parts).
func TestSecureJoinBounds(t *testing.T) {
	root := t.TempDir()
	for name, rel := range map[string]string{
		"32 KiB of parts": strings.Repeat("a/", 16<<10),
		"past PATH_MAX":   strings.Repeat("x", 5000),
		"65 parts":        strings.Repeat("/a", 65),
	} {
		if _, err := SecureJoin(root, rel); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("%s: %v, want ErrInvalidPath", name, err)
		}
	}
	if _, err := SecureJoin(root, strings.Repeat("/a", 64)); err != nil {
		t.Errorf("64 parts: %v", err)
	}
}

// BenchmarkSecureJoinDeepest: the worst SecureJoin within its bounds, 64
// parts that do not exist (every step up resolves the prefix).
func BenchmarkSecureJoinDeepest(b *testing.B) {
	root := b.TempDir()
	rel := strings.Repeat("/abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz", 64) // 4032 bytes
	for b.Loop() {
		if _, err := SecureJoin(root, rel); err != nil {
			b.Fatal(err)
		}
	}
}
