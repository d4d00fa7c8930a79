package cgroupfix

import (
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkResolve resolves a sandbox six levels deep
// (/kubepods.slice/.../pod slice/sub-slices/scope) with the limit on the
// pod slice, a spec and the CRI annotations: what the shim does once per
// sandbox Create.
func BenchmarkResolve(b *testing.B) {
	root := b.TempDir()
	// kubepods-burstable-podX-a-b-c.slice expands to six levels with the
	// scope: kubepods, -burstable, -podX, -a, -b, -c, scope.
	slice := "kubepods-burstable-" + podUID + "-a-b.slice"
	path := slice + ":cri-containerd:" + sandbox
	cp, err := ParseCgroupsPath(path)
	if err != nil {
		b.Fatal(err)
	}
	if depth := strings.Count(cp.Dir, "/"); depth != 6 {
		b.Fatalf("tree depth = %d, want 6 (%s)", depth, cp.Dir)
	}
	files := map[string]string{"cgroup.controllers": ""}
	for d := cp.Dir; d != "/"; d = filepath.Dir(d) {
		mem := "max"
		if strings.HasSuffix(d, "-"+podUID+".slice") {
			mem = "268435456"
		}
		files = merge(files, v2Cgroup(d[1:], mem, "max 100000"))
	}
	writeTree(b, root, files)
	h, closeH, err := Hierarchy{Root: root, Version: V2}.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer closeH()
	in := ResolveInput{
		CgroupsPath: path,
		Spec:        memSpec(1 << 30),
		Annotations: map[string]string{cri.SandboxMemory: "268435456", cri.SandboxCPUQuota: "0", cri.SandboxCPUPeriod: "100000"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := Resolve(h, in)
		if err != nil {
			b.Fatal(err)
		}
		if res.Effective.MemoryBytes != mib256 || len(res.Sources) != 8 {
			b.Fatalf("Resolve = %+v", res)
		}
	}
}

// BenchmarkResolveFloor is BenchmarkResolve's floor: the same limit files
// of the same tree (memory.max and cpu.max of the six levels and the root)
// opened with raw openat2 from one root handle (opened once, as Resolve's
// Hierarchy is), read and closed, and nothing else: no parsing, no checks. Resolve's cost over this is the
// guard's own.
func BenchmarkResolveFloor(b *testing.B) {
	root := b.TempDir()
	slice := "kubepods-burstable-" + podUID + "-a-b.slice"
	cp, err := ParseCgroupsPath(slice + ":cri-containerd:" + sandbox)
	if err != nil {
		b.Fatal(err)
	}
	files := map[string]string{"cgroup.controllers": ""}
	var rels []string
	for d := cp.Dir; ; d = filepath.Dir(d) {
		if d != "/" {
			files = merge(files, v2Cgroup(d[1:], "max", "max 100000"))
		}
		rel := strings.TrimPrefix(d, "/")
		if rel == "" {
			rel = "."
		}
		rels = append(rels, rel+"/memory.max", rel+"/cpu.max")
		if d == "/" {
			break
		}
	}
	writeTree(b, root, files)
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	buf := make([]byte, 4097)
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(rootFD)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		read := 0
		for _, rel := range rels {
			fd, err := unix.Openat2(rootFD, rel, how)
			if err != nil {
				continue // the root's own memory.max and cpu.max do not exist
			}
			n, _ := unix.Read(fd, buf)
			read += n
			unix.Close(fd)
		}
		if read == 0 {
			b.Fatal("read nothing")
		}
	}
}
