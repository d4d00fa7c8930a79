package runsc

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"time"
)

var runscProbes sync.Map // path and args -> probeResult

type probeResult struct {
	out string
	ok  bool
}

// probeRunsc runs the runsc binary with args (bounded) and returns its
// stdout and whether it exited 0. Definite answers are cached per binary
// and args, as they do not change while the guard runs: an exit 0, or
// runsc's own refusal (exit status 2 for a flag it does not define, or
// any other exit status it chose). A probe that timed out, was killed or
// could not run is not an answer: it is tried again next time, so a slow
// moment on a loaded node is not remembered as "flag unknown". With a
// cacheFile, definite answers are kept there too (probecache.go).
func probeRunsc(ctx context.Context, cacheFile, runsc string, args ...string) (string, bool) {
	path, err := exec.LookPath(runsc)
	if err != nil {
		return "", false
	}
	key := strings.Join(append([]string{path}, args...), "\x00")
	if v, ok := runscProbes.Load(key); ok {
		r := v.(probeResult)
		return r.out, r.ok
	}
	id := binaryID(path)
	if cacheFile != "" && id != "" {
		if r, ok := loadProbe(cacheFile, key, id); ok {
			runscProbes.Store(key, r)
			return r.out, r.ok
		}
	}
	r, definite := runProbe(ctx, path, args...)
	if definite {
		runscProbes.Store(key, r)
		if cacheFile != "" && id != "" {
			storeProbe(cacheFile, key, id, r)
		}
	}
	return r.out, r.ok
}

// probeTimeout bounds one runsc probe.
var probeTimeout = 10 * time.Second

// runProbe runs one probe and says whether its result is definite.
func runProbe(ctx context.Context, path string, args ...string) (probeResult, bool) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).Output()
	if err == nil {
		return probeResult{out: string(out), ok: true}, true
	}
	var ee *exec.ExitError
	definite := errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil
	return probeResult{out: string(out)}, definite
}

// ProbeFlag runs `runsc --flag=true --version`: runsc exits 2 on a
// flag it does not define.
func ProbeFlag(ctx context.Context, runsc, flag string) bool {
	return Prober{}.ProbeFlag(ctx, runsc, flag)
}

// ProbeRelease reads the release date from `runsc --version`.
func ProbeRelease(ctx context.Context, runsc string) int {
	return Prober{}.ProbeRelease(ctx, runsc)
}

// Prober asks runsc binaries what ProbeFlag and ProbeRelease ask, and
// keeps definite answers in CacheFile too when it is set, so that they
// outlive the process: each pod's guard is a new process, and a probe is
// a runsc process start, slow on a loaded node.
type Prober struct {
	CacheFile string
}

// ProbeFlag is ProbeFlag with p's cache.
func (p Prober) ProbeFlag(ctx context.Context, runsc, flag string) bool {
	_, ok := probeRunsc(ctx, p.CacheFile, runsc, "--"+flag+"=true", "--version")
	return ok
}

// ProbeRelease is ProbeRelease with p's cache.
func (p Prober) ProbeRelease(ctx context.Context, runsc string) int {
	out, ok := probeRunsc(ctx, p.CacheFile, runsc, "--version")
	if !ok {
		return 0
	}
	return Release(out)
}
