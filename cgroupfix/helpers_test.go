package cgroupfix

import (
	"os"
	"path/filepath"
	"testing"
)

// Pod uid and container id used by the fake trees, shaped like kubelet's.
const (
	podUID   = "pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0"
	podUIDfs = "pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	sandbox  = "6a541285fa39d743dc20bd8b3169c4a8f5cd4d77542144fe82d3f6f7af469c2c"
	mib256   = 268435456
	// v1Unlimited is what cgroup v1 reports for an unset limit with 4 KiB
	// pages: LLONG_MAX rounded down to a page.
	v1Unlimited = "9223372036854771712"
)

// writeTree creates files (path -> content) under root; a path ending in
// "/" is only a directory.
func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if p[len(p)-1] == '/' {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v2Cgroup returns the files of one v2 cgroup dir with the given
// memory.max and cpu.max.
func v2Cgroup(dir, mem, cpu string) map[string]string {
	return map[string]string{
		dir + "/memory.max":   mem + "\n",
		dir + "/cpu.max":      cpu + "\n",
		dir + "/cgroup.procs": "",
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
