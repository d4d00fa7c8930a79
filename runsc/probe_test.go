package runsc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProbeRunsc runs a stand-in runsc that knows one flag, prints a
// Debian-style version and counts its runs: each question is asked once.
func TestProbeRunsc(t *testing.T) {
	dir := t.TempDir()
	runsc := filepath.Join(dir, "runsc")
	count := filepath.Join(dir, "count")
	script := `#!/bin/sh
echo x >> ` + count + `
for a in "$@"; do
	case "$a" in
	--systemd-cgroup=true|--version) ;;
	*) echo "flag provided but not defined: $a" >&2; exit 2 ;;
	esac
done
echo "runsc version 0.0~20221219.0"
echo "spec: 1.0.2-dev"
`
	if err := os.WriteFile(runsc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if !ProbeFlag(ctx, runsc, "systemd-cgroup") {
			t.Errorf("ProbeFlag(systemd-cgroup) = false, want true")
		}
		if ProbeFlag(ctx, runsc, "cpu-num-from-quota") {
			t.Errorf("ProbeFlag(cpu-num-from-quota) = true, want false")
		}
		if got := ProbeRelease(ctx, runsc); got != 20221219 {
			t.Errorf("ProbeRelease = %d, want 20221219", got)
		}
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n != 3 {
		t.Errorf("runsc ran %d times for 3 distinct questions asked twice, want 3", n)
	}
	if ProbeFlag(ctx, filepath.Join(dir, "missing"), "systemd-cgroup") || ProbeRelease(ctx, filepath.Join(dir, "missing")) != 0 {
		t.Errorf("a missing runsc answered")
	}
}

// TestProbeRunscTimeoutNotCached: a probe that timed out (a loaded node)
// is no answer: the next Create asks again and gets the real one.
func TestProbeRunscTimeoutNotCached(t *testing.T) {
	dir := t.TempDir()
	runsc := filepath.Join(dir, "runsc")
	slow := filepath.Join(dir, "slow-once")
	script := `#!/bin/sh
if [ ! -e ` + slow + ` ]; then : > ` + slow + `; exec sleep 5; fi
echo "runsc version release-20260905.0"
`
	if err := os.WriteFile(runsc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := probeTimeout
	probeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { probeTimeout = old })
	ctx := context.Background()
	if ProbeFlag(ctx, runsc, "systemd-cgroup") {
		t.Fatal("a probe that timed out answered true")
	}
	if !ProbeFlag(ctx, runsc, "systemd-cgroup") {
		t.Error("after a timed-out probe, the next one was not run again (a timeout was cached as \"flag unknown\")")
	}
}

// TestProbeCacheFile: with a cache file an answer outlives the process
// that asked (the in-memory cache is dropped here, as a new guard process
// starts without it), until the runsc binary is replaced.
func TestProbeCacheFile(t *testing.T) {
	dir := t.TempDir()
	runsc := filepath.Join(dir, "runsc")
	count := filepath.Join(dir, "count")
	script := `#!/bin/sh
echo x >> ` + count + `
echo "runsc version release-20260905.0"
`
	write := func() {
		t.Helper()
		os.Remove(runsc)
		if err := os.WriteFile(runsc, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "x")
	}
	newProcess := func() { runscProbes = sync.Map{} }
	write()
	p := Prober{CacheFile: filepath.Join(dir, "state", "probes.json")}
	ctx := context.Background()
	if got := p.ProbeRelease(ctx, runsc); got != 20260905 {
		t.Fatalf("ProbeRelease = %d, want 20260905", got)
	}
	newProcess()
	if got := p.ProbeRelease(ctx, runsc); got != 20260905 || runs() != 1 {
		t.Errorf("second process: ProbeRelease = %d after %d runs, want 20260905 from the cache file after 1 run", got, runs())
	}
	newProcess()
	if got := (Prober{}).ProbeRelease(ctx, runsc); got != 20260905 || runs() != 2 {
		t.Errorf("without a cache file: ProbeRelease = %d after %d runs, want a run", got, runs())
	}
	newProcess()
	time.Sleep(10 * time.Millisecond)
	write() // an upgrade: another inode and change time
	if got := p.ProbeRelease(ctx, runsc); got != 20260905 || runs() != 3 {
		t.Errorf("after the binary changed: ProbeRelease = %d after %d runs, want it asked again", got, runs())
	}
	if fi, err := os.Stat(p.CacheFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file %v, %v: want mode 0600", fi, err)
	}
	os.WriteFile(p.CacheFile, []byte("not json"), 0o600)
	newProcess()
	if got := p.ProbeRelease(ctx, runsc); got != 20260905 || runs() != 4 {
		t.Errorf("with a broken cache file: ProbeRelease = %d after %d runs, want it asked again", got, runs())
	}
}
