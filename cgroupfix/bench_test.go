package cgroupfix

import (
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"path/filepath"
	"strings"
	"testing"
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
	h := Hierarchy{Root: root, Version: V2}
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
