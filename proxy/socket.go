package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/sys"
)

// The guard's own socket helpers, for the unix:// addresses containerd's
// shims use. containerd's shim library has them (pkg/shim util_unix.go),
// but linking that package brings in its whole shim runtime, gRPC with its
// HTTP/2 transport and net/http among it, which every guard process (one
// per pod) would load and initialise for nothing: the guard only names,
// binds, dials and removes sockets.

const unixScheme = "unix://"

// shimSocketAddress names a shim socket as containerd's shim library does
// (CreateSocketAddress): unix://<root>/<sha256 of socketPath/ns/id>, so
// the guard's sockets sit beside the runsc shim's, keyed so that they
// never collide with them.
func shimSocketAddress(ctx context.Context, root, socketPath, id string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Join(socketPath, ns, id)))
	return fmt.Sprintf("%s%s/%x", unixScheme, root, sum), nil
}

// addressPath is the filesystem path of a unix:// address, or, for an
// address without the scheme (containerd 1.x's abstract sockets), the
// abstract name with Go's "@" prefix.
func addressPath(address string) string {
	if p, ok := strings.CutPrefix(address, unixScheme); ok {
		return p
	}
	return "@" + address
}

// dialShim connects to a shim socket.
func dialShim(address string, timeout time.Duration) (net.Conn, error) {
	if proto, _, ok := strings.Cut(address, "://"); ok && proto != "unix" {
		return nil, fmt.Errorf("dial %s: unsupported protocol %q", address, proto)
	}
	return net.DialTimeout("unix", addressPath(address), timeout)
}

// listenShim binds a unix:// socket: its directory made 0700 if missing,
// the socket 0600, as containerd's shims make theirs.
func listenShim(address string) (*net.UnixListener, error) {
	p := addressPath(address)
	abstract := strings.HasPrefix(p, "@")
	if !abstract {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("mkdir for %s: %w", p, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if !abstract {
		if err := os.Chmod(p, 0o600); err != nil {
			l.Close()
			os.Remove(p)
			return nil, fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return l, nil
}

// addrInUse reports whether a listen failed because the socket exists.
func addrInUse(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "listen" && errors.Is(err, syscall.EADDRINUSE)
}

// canConnect reports whether something answers on address.
func canConnect(address string) bool {
	c, err := dialShim(address, 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeSocket removes a unix:// socket file (an abstract one has none).
func removeSocket(address string) error {
	p := addressPath(address)
	if strings.HasPrefix(p, "@") {
		return nil
	}
	return os.Remove(p)
}

// adjustOOMScore gives the guard server the OOM score containerd gives its
// shims: one above containerd's (this start process's parent), so that
// the kernel kills a shim before containerd.
func adjustOOMScore(pid int) error {
	score, err := sys.GetOOMScoreAdj(os.Getppid())
	if err != nil {
		return fmt.Errorf("get parent OOM score: %w", err)
	}
	return sys.AdjustOOMScore(pid, score+1)
}
