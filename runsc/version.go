package runsc

import (
	"regexp"
	"strconv"
)

// runsc releases (release-YYYYMMDD.N) whose fixes decide what a sandbox
// needs from the guard.
const (
	// ReleaseSystemdFlag: runsc has the systemd-cgroup flag
	// (https://github.com/google/gvisor/issues/193, PR 7287).
	ReleaseSystemdFlag = 20220321
	// ReleaseParentLimit: on cgroup v2, runsc's MemoryLimit reads the
	// parent's memory.max when the leaf says max
	// (https://github.com/google/gvisor/issues/9580, commit 42b69d015).
	ReleaseParentLimit = 20231106
	// ReleaseSystemdAuto: runsc recognises a "slice:prefix:name"
	// cgroupsPath without systemd-cgroup.
	ReleaseSystemdAuto = 20260615
)

var runscReleaseRe = regexp.MustCompile(`(?:release-|~|\b)(20\d{6})\.\d+`)

// Release returns the release date (YYYYMMDD) in what
// `runsc --version` printed: "runsc version release-20231106.0", or
// Debian's "runsc version 0.0~20221219.0". A build without a stamped
// version ("VERSION_MISSING", as `go install` makes it) gives 0: unknown.
func Release(versionOutput string) int {
	m := runscReleaseRe.FindStringSubmatch(versionOutput)
	if m == nil {
		return 0
	}
	d, _ := strconv.Atoi(m[1])
	return d
}
