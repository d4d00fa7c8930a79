package cgroupfix

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestMoveToCgroupfs(t *testing.T) {
	pod := "/kubepods/burstable/" + podUIDfs
	leaf := pod + "/" + sandbox
	tests := []struct {
		name     string
		version  Version
		files    map[string]string
		dir      string
		pids     []int
		mem      uint64
		wantMem  string // content of the limit file afterwards ("" = absent)
		wantErr  error
		memFile  string
		procFile string
	}{
		{
			name: "v2 new leaf", version: V2,
			files: v2Cgroup(pod[1:], "268435456", "max 100000"),
			dir:   leaf, pids: []int{4242, 4243}, mem: mib256,
			wantMem: "268435456", memFile: leaf[1:] + "/memory.max", procFile: leaf[1:] + "/cgroup.procs",
		},
		{
			name: "v1 new leaf", version: V1,
			files: map[string]string{"memory" + pod + "/memory.limit_in_bytes": "268435456\n"},
			dir:   leaf, pids: []int{4242, 4243}, mem: mib256,
			wantMem: "268435456", memFile: "memory" + leaf + "/memory.limit_in_bytes", procFile: "memory" + leaf + "/cgroup.procs",
		},
		{
			name: "existing leaf with a lower limit keeps it", version: V2,
			files: v2Cgroup(leaf[1:], "1048576", "max 100000"),
			dir:   leaf, pids: []int{7}, mem: mib256,
			wantMem: "1048576", memFile: leaf[1:] + "/memory.max", procFile: leaf[1:] + "/cgroup.procs",
		},
		{
			name: "existing leaf with max is lowered", version: V2,
			files: v2Cgroup(leaf[1:], "max", "max 100000"),
			dir:   leaf, pids: []int{7}, mem: mib256,
			wantMem: "268435456", memFile: leaf[1:] + "/memory.max", procFile: leaf[1:] + "/cgroup.procs",
		},
		{
			name: "no limit writes no limit", version: V2,
			files: map[string]string{pod[1:] + "/": ""},
			dir:   leaf, pids: []int{7}, mem: 0,
			wantMem: "", memFile: leaf[1:] + "/memory.max", procFile: leaf[1:] + "/cgroup.procs",
		},
		{
			name: "garbage limit in existing leaf", version: V2,
			files: v2Cgroup(leaf[1:], "junk", "max 100000"),
			dir:   leaf, pids: []int{7}, mem: mib256, wantErr: &ParseError{},
		},
		{
			name: "missing pod cgroup", version: V2,
			files: map[string]string{"kubepods/": ""},
			dir:   leaf, pids: []int{7}, mem: mib256, wantErr: fs.ErrNotExist,
		},
		{
			name: "root cgroup refused", version: V2,
			files: map[string]string{}, dir: "/", pids: []int{7}, wantErr: ErrInvalidArgument,
		},
		{
			name: "bad pid", version: V2,
			files: map[string]string{pod[1:] + "/": ""}, dir: leaf, pids: []int{-7}, wantErr: ErrInvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			h := Hierarchy{Root: root, Version: tt.version}
			err := MoveToCgroupfs(h, tt.dir, tt.pids, tt.mem)
			if tt.wantErr != nil {
				var pe *ParseError
				if _, isParse := tt.wantErr.(*ParseError); isParse {
					if !errors.As(err, &pe) {
						t.Fatalf("MoveToCgroupfs(%q) error = %v, want a *ParseError", tt.dir, err)
					}
				} else if !errors.Is(err, tt.wantErr) {
					t.Fatalf("MoveToCgroupfs(%q) error = %v, want %v", tt.dir, err, tt.wantErr)
				}
				// A failed move moves nobody.
				if procs, _ := os.ReadFile(filepath.Join(root, tt.dir, "cgroup.procs")); len(procs) > 0 {
					t.Errorf("MoveToCgroupfs(%q) failed but wrote cgroup.procs = %q", tt.dir, procs)
				}
				return
			}
			if err != nil {
				t.Fatalf("MoveToCgroupfs(%q) error = %v", tt.dir, err)
			}
			mem, err := os.ReadFile(filepath.Join(root, tt.memFile))
			if tt.wantMem == "" {
				if err == nil {
					t.Errorf("MoveToCgroupfs(%q, mem=0) wrote %s = %q, want no file", tt.dir, tt.memFile, mem)
				}
			} else if got := string(mem); got != tt.wantMem && got != tt.wantMem+"\n" {
				t.Errorf("MoveToCgroupfs(%q): %s = %q, want %q", tt.dir, tt.memFile, got, tt.wantMem)
			}
			procs, err := os.ReadFile(filepath.Join(root, tt.procFile))
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			for _, p := range tt.pids {
				want += strconv.Itoa(p) + "\n"
			}
			if string(procs) != want {
				t.Errorf("MoveToCgroupfs(%q): cgroup.procs = %q, want %q", tt.dir, procs, want)
			}
		})
	}

	t.Run("symlink out of the root", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		writeTree(t, base, map[string]string{"root/kubepods/": "", "outside/pod/": ""})
		if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "kubepods", "burstable")); err != nil {
			t.Fatal(err)
		}
		err := MoveToCgroupfs(Hierarchy{Root: root, Version: V2}, "/kubepods/burstable/pod/c1", []int{1}, mib256)
		if !errors.Is(err, ErrPathEscape) {
			t.Errorf("MoveToCgroupfs through a symlink out of the root: error = %v, want %v", err, ErrPathEscape)
		}
		if _, err := os.Stat(filepath.Join(base, "outside", "pod", "c1")); err == nil {
			t.Errorf("MoveToCgroupfs created %s outside the root", filepath.Join(base, "outside", "pod", "c1"))
		}
	})

	t.Run("symlinked control files are not followed", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		leaf := filepath.Join(root, "kubepods", "pod", "c1")
		writeTree(t, base, map[string]string{"root/kubepods/pod/c1/": "", "outside/procs": "", "outside/limit": "max\n"})
		for name, target := range map[string]string{"cgroup.procs": "procs", "memory.max": "limit"} {
			if err := os.Symlink(filepath.Join(base, "outside", target), filepath.Join(leaf, name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := MoveToCgroupfs(Hierarchy{Root: root, Version: V2}, "/kubepods/pod/c1", []int{1}, mib256); err == nil {
			t.Errorf("MoveToCgroupfs with symlinked control files = nil, want an error")
		}
		for _, f := range []string{"procs", "limit"} {
			b, _ := os.ReadFile(filepath.Join(base, "outside", f))
			if want := map[string]string{"procs": "", "limit": "max\n"}[f]; string(b) != want {
				t.Errorf("outside/%s = %q after MoveToCgroupfs, want %q", f, b, want)
			}
		}
		if _, err := (Hierarchy{Root: root, Version: V2}).ReadLimits("/kubepods/pod/c1"); err == nil {
			t.Errorf("ReadLimits through a symlinked memory.max = nil error, want one")
		}
	})
}

// scriptedWriter answers each write with the next error.
type scriptedWriter struct {
	errs   []error
	writes int
}

func (w *scriptedWriter) WriteString(s string) (int, error) {
	w.writes++
	if len(w.errs) == 0 {
		return len(s), nil
	}
	err := w.errs[0]
	w.errs = w.errs[1:]
	return 0, err
}

// TestWritePID: a process gone since it was listed is no error; EINVAL (a
// task still forking) is retried; anything else fails.
func TestWritePID(t *testing.T) {
	for _, tc := range []struct {
		name       string
		errs       []error
		wantErr    error
		wantWrites int
	}{
		{"written", nil, nil, 1},
		{"gone", []error{syscall.ESRCH}, nil, 1},
		{"forking", []error{syscall.EINVAL, syscall.EINVAL}, nil, 3},
		{"always EINVAL", []error{syscall.EINVAL, syscall.EINVAL, syscall.EINVAL, syscall.EINVAL, syscall.EINVAL, syscall.EINVAL}, syscall.EINVAL, pidRetries},
		{"refused", []error{syscall.EBUSY}, syscall.EBUSY, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &scriptedWriter{errs: tc.errs}
			err := writePID(w, 42)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("writePID = %v, want %v", err, tc.wantErr)
			}
			if w.writes != tc.wantWrites {
				t.Errorf("%d writes, want %d", w.writes, tc.wantWrites)
			}
		})
	}
}
