package proxy

import (
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
)

// WriteDelegateAddress records in bundle the task API address of the runsc
// shim serving that container.
func WriteDelegateAddress(bundle, address string) error {
	return atomicfile.Replace(filepath.Join(bundle, delegateFile), []byte(address), 0o600)
}

// ReadDelegateAddress returns what WriteDelegateAddress recorded.
func ReadDelegateAddress(bundle string) (string, error) {
	p := filepath.Join(bundle, delegateFile)
	b, err := safefile.ReadFile(p, 4096)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	r, err := ParseStartReply(b)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return r.Address, nil
}

// writeAddress makes <bundle>/address name the container's guard socket, so
// that containerd 1.6/1.7 reconnect to the guard, not the runsc shim, after
// a restart (2.x reads bootstrap.json, which it writes from the guard's
// start reply).
func writeAddress(bundle, address string) error {
	return atomicfile.Replace(filepath.Join(bundle, "address"), []byte(address), 0o600)
}

// groupID returns the id that names the guard process serving a container:
// its pod sandbox id under CRI, else its own id.
func groupID(id string, spec *specs.Spec) string {
	if spec != nil {
		if g := strings.TrimSpace(spec.Annotations[cri.SandboxID]); validID(g) {
			return g
		}
	}
	return id
}
