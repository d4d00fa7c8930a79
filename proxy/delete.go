package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Delete is the delete action containerd runs for a container whose shim
// it lost (the guard was killed, or containerd found its socket dead after
// a restart). The runsc shim's own delete cleans up what runsc made; then
// the guard makes sure nothing of the container's is left: the runsc shim
// process that served it, which outlives the guard (it is its own
// process), and the sockets nobody serves any more. Without the guard,
// that runsc shim is the one containerd lost, so it is gone already.
func Delete(ctx context.Context, f Flags, stdin, stdout, stderr *os.File) int {
	code := passThrough(ctx, f, stdin, stdout, stderr)
	bundle := f.Bundle
	if bundle == "" {
		bundle, _ = os.Getwd()
	}
	reapDelegate(ctx, f.ID, bundle)
	removeStale(containerSocketAddress(ctx, f, f.ID))
	// The pod's control socket, if its guard died: no start will come for
	// a pod whose containers containerd is deleting.
	spec, _ := ocispec.Read(bundle)
	removeStale(controlSocketAddress(ctx, f, groupID(f.ID, spec)))
	return code
}

// removeStale removes a socket nobody listens on.
func removeStale(addr string, err error) {
	if err == nil && !canConnect(addr) {
		_ = removeSocket(addr)
	}
}

// reapDelegate stops the runsc shim recorded in bundle for container id,
// unless it serves containers of other bundles too (runsc's grouping).
func reapDelegate(ctx context.Context, id, bundle string) {
	l := log.G(ctx).WithField("container_id", id)
	delegate, err := ReadDelegateAddress(bundle)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			l.WithError(err).Warn("no runsc shim address in the bundle")
		}
		return
	}
	if !canConnect(delegate) {
		_ = removeSocket(delegate)
		return
	}
	if shared := bundlesNaming(filepath.Dir(bundle), delegate, filepath.Base(bundle)); len(shared) > 0 {
		l.WithField("also_serves", shared).Info("runsc shim serves other containers, left running")
		return
	}
	pid, err := delegatePID(bundle, id)
	if err != nil {
		l.WithError(err).Warn("runsc shim still serving but not identified: left running")
		return
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		l.WithError(err).WithField("pid", pid).Warn("kill orphaned runsc shim")
		return
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if unix.Kill(pid, 0) != nil || isZombie(pid) {
			break
		}
	}
	_ = removeSocket(delegate)
	l.WithFields(log.Fields{"pid": pid, "delegate": delegate}).Info("stopped the runsc shim of a container containerd deleted")
}

// bundlesNaming lists the other bundles in dir whose runsc shim is
// address.
func bundlesNaming(dir, address, except string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() || e.Name() == except {
			continue
		}
		if a, err := ReadDelegateAddress(filepath.Join(dir, e.Name())); err == nil && a == address {
			out = append(out, e.Name())
		}
	}
	return out
}

// delegatePID returns the pid in <bundle>/shim.pid (runsc's start writes
// it) once /proc shows it is that runsc shim: a process whose working
// directory is the bundle and whose command line names the container.
func delegatePID(bundle, id string) (int, error) {
	b, err := safefile.ReadFile(filepath.Join(bundle, "shim.pid"), 64)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("shim.pid %q: not a pid", b)
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	if strings.TrimSuffix(cwd, " (deleted)") != filepath.Clean(bundle) {
		return 0, fmt.Errorf("pid %d works in %s, not the bundle", pid, cwd)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	// Not the guard itself: its server for a pod also works in the
	// sandbox's bundle with "-id <sandbox>", and ends with its action.
	if bytes.HasSuffix(cmdline, []byte("\x00"+actionServe+"\x00")) {
		return 0, fmt.Errorf("pid %d is a runsc-guard server, not a runsc shim", pid)
	}
	if !bytes.Contains(append([]byte{0}, cmdline...), []byte("\x00-id\x00"+id+"\x00")) {
		return 0, fmt.Errorf("pid %d (%q) is not the runsc shim of %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), id)
	}
	return pid, nil
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
