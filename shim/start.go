package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
)

// maxStdin bounds what start reads from containerd (runtime options or
// bootstrap parameters, a few hundred bytes in practice).
const maxStdin = 10 << 20

// Start is the start action: it starts the runsc shim for the container in
// the working directory (the bundle), makes sure a guard process serves the
// container's pod, points <bundle>/address at the guard and returns the
// guard's address for containerd.
func Start(ctx context.Context, f Flags, stdin io.Reader) (string, error) {
	if f.Namespace == "" || f.ID == "" {
		return "", fmt.Errorf("start: -namespace and -id are required")
	}
	bundle, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("start %s: get bundle: %w", f.ID, err)
	}
	cfg, err := LoadConfig(ConfigPath())
	if err != nil {
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	shimPath, err := cfg.resolveShim()
	if err != nil {
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	input, err := io.ReadAll(io.LimitReader(stdin, maxStdin))
	if err != nil {
		return "", fmt.Errorf("start %s: read stdin: %w", f.ID, err)
	}
	spec, err := readSpec(bundle)
	if err != nil {
		// ctr and tests may start a shim without a spec yet; group alone.
		log.G(ctx).WithError(err).Debug("no spec at start, container is its own group")
	}
	group := groupID(f.ID, spec)

	delegateAddr, err := startDelegate(ctx, shimPath, f, bundle, input)
	if err != nil {
		return "", err
	}
	guardAddr, err := ensureServer(ctx, f, group, bundle)
	if err == nil {
		err = WriteDelegateAddress(bundle, delegateAddr)
	}
	if err == nil {
		err = writeAddress(bundle, guardAddr)
	}
	if err != nil {
		stopDelegate(ctx, delegateAddr, f.ID)
		return "", fmt.Errorf("start %s: %w", f.ID, err)
	}
	log.G(ctx).WithFields(log.Fields{
		"container_id": f.ID, "group": group, "delegate": delegateAddr, "address": guardAddr,
	}).Info("runsc shim started behind runsc-guard")
	return guardAddr, nil
}

// startDelegate runs the runsc shim's start with the guard's own command
// line, environment, stdin and working directory, and returns its address.
func startDelegate(ctx context.Context, shimPath string, f Flags, bundle string, input []byte) (string, error) {
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
		return "", fmt.Errorf("start runsc shim %s for %s: %w: %s", shimPath, f.ID, err,
			strings.TrimSpace(stdout.String()+" "+stderr.String()))
	}
	addr, err := ParseStartReply(stdout.Bytes())
	if err != nil {
		return "", fmt.Errorf("start runsc shim %s for %s: %w", shimPath, f.ID, err)
	}
	return addr, nil
}

// stopDelegate asks a runsc shim the guard started but cannot front to exit,
// so that a failed start leaves no process behind. A runsc shim that serves
// other containers ignores it.
func stopDelegate(ctx context.Context, address, id string) {
	conn, err := shim.AnonDialer(address, 5*time.Second)
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

// guardSocketAddress is the guard's socket for a pod. It is derived like
// containerd's shim sockets, from a key the runsc shim never uses, so the
// two never collide.
func guardSocketAddress(ctx context.Context, f Flags, group string) (string, error) {
	return shim.CreateSocketAddress(ctx, socketDir(), f.Address, "runsc-guard/"+group, false)
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

// ensureServer returns the address of the guard process serving group,
// starting one when none is listening.
func ensureServer(ctx context.Context, f Flags, group, bundle string) (string, error) {
	addr, err := guardSocketAddress(ctx, f, group)
	if err != nil {
		return "", fmt.Errorf("guard socket address: %w", err)
	}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("listen %s: %w", addr, err)
		}
		if shim.CanConnect(addr) {
			return addr, nil // the pod's guard is already running
		}
		// A guard that died left its socket behind.
		if err := shim.RemoveSocket(addr); err != nil {
			return "", fmt.Errorf("remove stale socket %s: %w", addr, err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return "", fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	// The server keeps serving the socket after this process closes it.
	l.SetUnlinkOnClose(false)
	defer l.Close()
	if err := spawnServer(ctx, f, group, bundle, l); err != nil {
		_ = shim.RemoveSocket(addr)
		return "", err
	}
	return addr, nil
}

// spawnServer re-executes the guard as the pod's long-running server,
// handing it the listening socket as fd 3.
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
	cmd.ExtraFiles = []*os.File{lf}
	// Its own process group: containerd's signals to the start process's
	// group must not reach the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start guard server: %w", err)
	}
	pid := cmd.Process.Pid
	if err := shim.AdjustOOMScore(pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjust guard OOM score")
	}
	// The server outlives this process; init reaps it.
	_ = cmd.Process.Release()
	log.G(ctx).WithFields(log.Fields{"group": group, "server_pid": pid, "bundles": filepath.Dir(bundle)}).Info("guard server started")
	return nil
}

// passThrough runs the runsc shim with the guard's command line and stdio
// and returns its exit code: delete (its stdout is the DeleteResponse
// containerd reads) and -info.
func passThrough(ctx context.Context, f Flags, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := LoadConfig(ConfigPath())
	if err != nil {
		// Cleanup must not fail on a bad config: use the default runsc shim.
		log.G(ctx).WithError(err).Warn("using default runsc shim for " + f.Action)
		cfg = DefaultConfig()
	}
	shimPath, err := cfg.resolveShim()
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
