package cgroupfix

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// outsideLimit is the memory.max of every file outside the root a hostile
// tree links to: a Resolve that reports it read outside its root.
const outsideLimit = 7 * 4096

// treeLevel is what one level of a generated tree holds in memory.max.
type treeLevel int

const (
	levelNone      treeLevel = iota // no memory.max (a directory without limits)
	levelMax                        // "max"
	levelLimit                      // a finite limit
	levelJunk                       // not a number
	levelZero                       // "0"
	levelHuge                       // 1 MiB of digits
	levelFIFO                       // a FIFO
	levelFileLink                   // a symlink to a memory.max outside the root
	levelDirLink                    // the level's directory is a symlink out of the root
	levelNoDir                      // the level does not exist
	levelDirAsFile                  // memory.max is a directory
	levelCount
)

// genTree builds a v2 cgroup tree under root for the systemd path of a
// sandbox with len(levels) slice levels below kubepods.slice, the levels
// as data says, and returns the cgroupsPath and the tightest finite limit
// a correct reader may find (0: none), and whether the tree has
// something a reader must refuse or skip (then Resolve may fail).
func genTree(t *testing.T, root, outside string, data []byte) (path string, tightest uint64, hostile bool) {
	// The slice name encodes the depth: kubepods-burstable-pod<uid>[-x...].slice
	depth := 2 + int(data[0]%4) // kubepods, burstable, pod, up to 3 more
	data = data[1:]
	name := "kubepods"
	var dirs []string // outermost first, below the root
	dir := ""
	for i := 0; i < depth; i++ {
		switch i {
		case 0:
		case 1:
			name += "-burstable"
		case 2:
			name += "-" + podUID
		default:
			name += fmt.Sprintf("-l%d", i)
		}
		dir += "/" + name + ".slice"
		dirs = append(dirs, dir)
	}
	path = name + ".slice:cri-containerd:" + sandbox
	dirs = append(dirs, dir+"/cri-containerd-"+sandbox+".scope")
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("memory cpu\n"), 0o644)
	gone := false // a level above did not exist or was a link: nothing below
	for i, d := range dirs {
		var b byte
		if i < len(data) {
			b = data[i]
		}
		kind := treeLevel(b) % levelCount
		limit := uint64(b/16+1) * 1 << 20
		full := filepath.Join(root, d)
		if gone {
			continue
		}
		switch kind {
		case levelNoDir:
			gone = true
			continue
		case levelDirLink:
			if err := os.Symlink(outside, full); err != nil {
				t.Fatal(err)
			}
			gone, hostile = true, true
			continue
		}
		if err := os.MkdirAll(full, 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(full, "memory.max")
		var err error
		switch kind {
		case levelMax:
			err = os.WriteFile(f, []byte("max\n"), 0o644)
		case levelLimit:
			err = os.WriteFile(f, []byte(strconv.FormatUint(limit, 10)+"\n"), 0o644)
			if tightest == 0 || limit < tightest {
				tightest = limit
			}
		case levelJunk:
			err, hostile = os.WriteFile(f, []byte("lots\n"), 0o644), true
		case levelZero:
			err, hostile = os.WriteFile(f, []byte("0\n"), 0o644), true
		case levelHuge:
			err, hostile = os.WriteFile(f, []byte(strings.Repeat("9", 1<<20)), 0o644), true
		case levelFIFO:
			err, hostile = syscall.Mkfifo(f, 0o644), true
		case levelFileLink:
			err, hostile = os.Symlink(filepath.Join(outside, "memory.max"), f), true
		case levelDirAsFile:
			err, hostile = os.Mkdir(f, 0o755), true
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return path, tightest, hostile
}

// FuzzResolveTree builds random cgroup trees, hostile files and links out
// of the root included, and holds Resolve to three invariants: it never
// reads outside the root, never returns a limit looser than the tightest
// finite one on the path, and never panics or hangs.
func FuzzResolveTree(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 1, 1, 2}, {3, 2, 2, 2, 2, 2, 2}, {1, 1, 7, 2}, {2, 1, 8, 2, 2}, {1, 2, 6, 2},
		{3, 1, 2, 3, 4, 5, 6, 7}, {0, 10, 2}, {2, 2, 0x32, 9, 2}, {1, 4, 5, 2},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		root, outside := t.TempDir(), t.TempDir()
		os.WriteFile(filepath.Join(outside, "memory.max"), []byte(strconv.Itoa(outsideLimit)+"\n"), 0o644)
		path, tightest, hostile := genTree(t, root, outside, data)
		type result struct {
			res Resolution
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := Resolve(Hierarchy{Root: root, Version: V2}, ResolveInput{CgroupsPath: path})
			done <- result{res, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Resolve(%q) hung on tree %v", path, data)
		}
		if r.err != nil {
			if !hostile {
				t.Fatalf("Resolve(%q) failed on a tree with nothing hostile (%v): %v", path, data, r.err)
			}
			return // a refusal keeps every invariant
		}
		eff := r.res.Effective.MemoryBytes
		for _, s := range r.res.Sources {
			if s.Limits.MemoryBytes == outsideLimit || (s.Kind == KindCgroup && !Within("/", s.Path)) {
				t.Fatalf("Resolve(%q) read outside the root: source %+v (tree %v)", path, s, data)
			}
		}
		if eff == outsideLimit {
			t.Fatalf("Resolve(%q) = %d, the limit outside the root (tree %v)", path, eff, data)
		}
		if tightest > 0 && (eff == 0 || eff > tightest) {
			t.Fatalf("Resolve(%q) = %d, looser than the tightest finite limit %d on the path (tree %v)", path, eff, tightest, data)
		}
	})
}
