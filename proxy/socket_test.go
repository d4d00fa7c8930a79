package proxy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// TestShimSocketAddress: the guard names its sockets exactly as
// containerd's shim library names shim sockets.
func TestShimSocketAddress(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	for _, id := range []string{"runsc-guard/abc", "runsc-guard-control/pod1"} {
		got, err := shimSocketAddress(ctx, "/run/containerd/s", "/run/containerd/containerd.sock.ttrpc", id)
		if err != nil {
			t.Fatal(err)
		}
		want, err := shim.CreateSocketAddress(ctx, "/run/containerd/s", "/run/containerd/containerd.sock.ttrpc", id, false)
		if err != nil || got != want {
			t.Errorf("shimSocketAddress(%s) = %q, containerd's %q (%v)", id, got, want, err)
		}
	}
	if _, err := shimSocketAddress(context.Background(), "/r", "/s", "x"); err == nil {
		t.Error("shimSocketAddress without a namespace succeeded")
	}
}

// TestListenShim: the socket is 0600 in a 0700 directory, a second bind
// is "in use", something answers while it is open, and it can be removed.
func TestListenShim(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	addr := "unix://" + filepath.Join(dir, "sock")
	l, err := listenShim(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "sock"): 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", p, fi.Mode(), err, want)
		}
	}
	if _, err := listenShim(addr); !addrInUse(err) {
		t.Errorf("second listen: %v, want address in use", err)
	}
	if !canConnect(addr) {
		t.Error("canConnect = false on a listening socket")
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if canConnect(addr) {
		t.Error("canConnect = true on a closed socket")
	}
	if err := removeSocket(addr); err != nil {
		t.Errorf("removeSocket: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sock")); !os.IsNotExist(err) {
		t.Errorf("socket still there after removeSocket: %v", err)
	}
	if _, err := dialShim("vsock://3:1024", 0); err == nil {
		t.Error("dialShim of vsock succeeded")
	}
}
