// Package ocispec reads the OCI spec of the bundle containerd gives a
// container: the one spec reader of the guard and its operator commands.
package ocispec

import (
	"encoding/json"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MaxSize bounds a bundle's config.json (containerd's are a few KiB; one
// with thousands of mounts or environment variables stays far below).
const MaxSize = 16 << 20

// Read reads the OCI spec (config.json) of a bundle.
func Read(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := safefile.ReadFile(p, MaxSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return &s, nil
}
