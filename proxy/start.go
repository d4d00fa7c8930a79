package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
)

// maxStdin bounds what start reads from containerd (runtime options or
// bootstrap parameters, a few hundred bytes in practice).
const maxStdin = 10 << 20

// Start is the start action: it starts the runsc shim for the container in
// the working directory (the bundle), gives the container a socket of its
// own served by the guard process of its pod (starting one when none runs),
// points <bundle>/address at that socket and returns it for containerd.
//
// One socket per container, not one per pod: containerd holds one
// connection per container and cleans a container up when that connection
// closes; and a runsc shim that exits removes the socket named in its
// bundle's address file (containerd's pkg/shim util_unix.go, gVisor's
// pkg/shim/v1/service.go), which must never be a socket that still serves
// other containers of the pod.
func Start(ctx context.Context, f Flags, stdin io.Reader) (string, error) {
	if f.Namespace == "" || f.ID == "" {
		return "", fmt.Errorf("start: -namespace and -id are required")
	}
	if !validID(f.ID) {
		return "", fmt.Errorf("start: invalid container id %q", f.ID)
	}
	bundle, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("start %s: get bundle: %w", f.ID, err)
	}
	cfg, err := config.Load(config.Path())
	if err != nil {
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	shimPath, err := cfg.ResolveShim()
	if err != nil {
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	input, err := io.ReadAll(io.LimitReader(stdin, maxStdin))
	if err != nil {
		return "", fmt.Errorf("start %s: read stdin: %w", f.ID, err)
	}
	spec, err := ocispec.Read(bundle)
	if err != nil {
		// ctr and tests may start a shim without a spec yet; group alone.
		log.G(ctx).WithError(err).Debug("no spec at start, container is its own group")
	}
	group := groupID(f.ID, spec)

	reply, err := startDelegate(ctx, shimPath, f, bundle, input)
	if err != nil {
		return "", err
	}
	addr, err := serveContainer(ctx, f, group, bundle, reply.Address)
	if err != nil {
		stopDelegate(ctx, reply.Address, f.ID)
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	log.G(ctx).WithFields(log.Fields{
		"container_id": f.ID, "group": group, "delegate": reply.Address, "delegate_reply": reply.Format, "address": addr,
	}).Info("runsc shim started behind runsc-guard")
	return addr, nil
}

// serveContainer binds the container's socket, hands it to the pod's guard
// and records both addresses in the bundle. On error nothing of it is left.
func serveContainer(ctx context.Context, f Flags, group, bundle, delegate string) (_ string, retErr error) {
	addr, err := containerSocketAddress(ctx, f, f.ID)
	if err != nil {
		return "", fmt.Errorf("container socket address: %w", err)
	}
	l, inUse, err := bind(addr)
	if err != nil {
		return "", err
	}
	if inUse {
		return "", fmt.Errorf("listen %s: another process serves it", addr)
	}
	// The guard serves the socket after this process closes its copy.
	l.SetUnlinkOnClose(false)
	defer l.Close()
	defer func() {
		if retErr != nil {
			_ = removeSocket(addr)
		}
	}()
	if err := WriteDelegateAddress(bundle, delegate); err != nil {
		return "", err
	}
	req := handoffRequest{ID: f.ID, Bundle: bundle, Delegate: delegate, Address: addr}
	if err := handOffToGuard(ctx, f, group, bundle, req, l); err != nil {
		return "", err
	}
	// Written last: containerd 1.6/1.7 reconnect through it after a
	// restart (2.x reads bootstrap.json, written from our reply).
	if err := writeAddress(bundle, addr); err != nil {
		return "", err
	}
	return addr, nil
}

// bind binds a shim socket, replacing a stale one left by a process that
// died. inUse (with no listener) means a live process serves it already,
// or a concurrent start bound it first.
func bind(addr string) (l *net.UnixListener, inUse bool, err error) {
	l, err = listenShim(addr)
	if err == nil || !addrInUse(err) {
		return l, false, wrapListen(addr, err)
	}
	if canConnect(addr) {
		return nil, true, nil
	}
	if err := removeSocket(addr); err != nil {
		return nil, false, fmt.Errorf("remove stale socket %s: %w", addr, err)
	}
	if l, err = listenShim(addr); err != nil && addrInUse(err) {
		return nil, true, nil
	}
	return l, false, wrapListen(addr, err)
}

func wrapListen(addr string, err error) error {
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return nil
}

// handOffAttempts bounds how often start retries a hand-off that found no
// guard taking containers (one exiting as we came, or two starts racing to
// spawn one).
const handOffAttempts = 20

// handOffToGuard gives the container to the pod's guard, starting one when
// none takes it.
func handOffToGuard(ctx context.Context, f Flags, group, bundle string, req handoffRequest, l *net.UnixListener) error {
	ctl, err := controlSocketAddress(ctx, f, group)
	if err != nil {
		return fmt.Errorf("control socket address: %w", err)
	}
	var last error
	for attempt := 0; attempt < handOffAttempts; attempt++ {
		err := handOff(ctl, req, l)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errGuardGone) {
			return err
		}
		last = err
		if err := ensureServer(ctx, f, group, bundle, ctl); err != nil {
			return err
		}
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
		}
	}
	return fmt.Errorf("hand container %s to a guard: %w", req.ID, last)
}

// ensureServer starts the pod's guard unless a process listens on its
// control socket (a guard that is still serving, or was just started by a
// concurrent start).
func ensureServer(ctx context.Context, f Flags, group, bundle, ctl string) error {
	l, inUse, err := bind(ctl)
	if err != nil || inUse {
		return err
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	if err := spawnServer(ctx, f, group, bundle, l); err != nil {
		_ = removeSocket(ctl)
		return err
	}
	return nil
}

// startDelegate runs the runsc shim's start with the guard's own command
// line, environment, stdin and working directory, and returns its reply.
func startDelegate(ctx context.Context, shimPath string, f Flags, bundle string, input []byte) (StartReply, error) {
	cmd := exec.CommandContext(ctx, shimPath, f.Args...)
	cmd.Dir = bundle
	cmd.Env = os.Environ()
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		log.G(ctx).WithField("container_id", f.ID).WithField("stderr", s).Warn("runsc shim start wrote to stderr")
	}
	if err != nil {
		return StartReply{}, fmt.Errorf("start runsc shim %s for %s: %w: %s", shimPath, f.ID, err,
			strings.TrimSpace(stdout.String()+" "+stderr.String()))
	}
	reply, err := ParseStartReply(stdout.Bytes())
	if err != nil {
		return StartReply{}, fmt.Errorf("start runsc shim %s for %s: %w", shimPath, f.ID, err)
	}
	return reply, nil
}

// stopDelegate asks a runsc shim the guard started but cannot front to exit,
// so that a failed start leaves no process behind. A runsc shim that serves
// other containers ignores it.
func stopDelegate(ctx context.Context, address, id string) {
	conn, err := dialDelegate(address)
	if err != nil {
		log.G(ctx).WithError(err).WithField("delegate", address).Warn("stop runsc shim after failed start")
		return
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := taskAPI.NewTTRPCTaskClient(c).Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id}); err != nil && !isClosedErr(err) {
		log.G(ctx).WithError(err).WithField("delegate", address).Warn("stop runsc shim after failed start")
	}
}

// socketDir is where the guard's sockets live: containerd's shim socket
// directory, or RUNSC_GUARD_SOCKET_DIR (tests; nodes with a non-default
// containerd state directory).
func socketDir() string {
	if d := os.Getenv("RUNSC_GUARD_SOCKET_DIR"); d != "" {
		return d
	}
	return filepath.Join(defaults.DefaultStateDir, "s")
}

// spawnServer re-executes the guard as the pod's long-running server,
// handing it the control socket as fd 3.
func spawnServer(ctx context.Context, f Flags, group, bundle string, l *net.UnixListener) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	lf, err := l.File()
	if err != nil {
		return fmt.Errorf("socket file: %w", err)
	}
	defer lf.Close()
	args := []string{"-namespace", f.Namespace, "-id", group, "-address", f.Address, "-publish-binary", f.PublishBinary}
	if f.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, append(args, actionServe)...)
	cmd.Dir = bundle
	cmd.Env = os.Environ()
	if os.Getenv("GOMAXPROCS") == "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=2")
	}
	// One server per pod: its heap is small and mostly short-lived
	// (requests, protobuf messages), so a lower GC target than Go's 100
	// keeps its resident memory near its live heap. The environment's
	// GOGC, if set, wins.
	if os.Getenv("GOGC") == "" {
		cmd.Env = append(cmd.Env, "GOGC="+serverGOGC)
	}
	cmd.ExtraFiles = []*os.File{lf}
	// Its own process group: containerd's signals to the start process's
	// group must not reach the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start guard server: %w", err)
	}
	pid := cmd.Process.Pid
	if err := adjustOOMScore(pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjust guard OOM score")
	}
	// The server outlives this process; init reaps it.
	_ = cmd.Process.Release()
	log.G(ctx).WithFields(log.Fields{"group": group, "server_pid": pid, "bundles": filepath.Dir(bundle)}).Info("guard server started")
	return nil
}

// serverGOGC is the guard server's GOGC (see spawnServer).
const serverGOGC = "25"

// passThrough runs the runsc shim with the guard's command line and stdio
// and returns its exit code: delete (its stdout is the DeleteResponse
// containerd reads) and -info.
func passThrough(ctx context.Context, f Flags, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := config.Load(config.Path())
	if err != nil {
		// Cleanup must not fail on a bad config: use the default runsc shim.
		log.G(ctx).WithError(err).Warn("using default runsc shim for " + f.Action)
		cfg = config.Default()
	}
	shimPath, err := cfg.ResolveShim()
	if err != nil {
		fmt.Fprintf(stderr, "runsc-guard: %s %s: %v", f.Action, f.ID, err)
		return 1
	}
	cmd := exec.CommandContext(ctx, shimPath, f.Args...)
	cmd.Env = os.Environ()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "runsc-guard: run %s %s: %v", shimPath, f.Action, err)
		return 1
	}
	return 0
}
