//go:build !integration

package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestTestBedFilesTracked: every file of the test bed is in git (a unit
// test: run.sh runs the tagged report binary from elsewhere). The VM
// image and the guest scripts are built from the work tree, so a file that
// .gitignore hides (the compat shim under image/overlay/usr/local/bin once
// matched "bin/") passes every run here and is missing from CI's clean
// clone.
func TestTestBedFilesTracked(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("skipped: git not installed")
	}
	if err := exec.Command(git, "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		t.Skip("skipped: not a git work tree")
	}
	out, err := exec.Command(git, "ls-files", "--others", "--ignored", "--exclude-standard", "--", ".").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasSuffix(f, ".test") {
			continue // go test -c output
		}
		t.Errorf("%s is ignored by git: a clean clone would lack it", f)
	}
}
