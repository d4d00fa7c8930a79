package shim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// bootstrapReply is the JSON form of a shim's start reply (containerd's
// shim.BootstrapParams, containerd >= 1.7).
type bootstrapReply struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// ParseStartReply returns the task API address from what a shim's start
// action printed. It accepts the plain address every containerd accepts and
// the JSON form of shims built with containerd >= 1.7's shim package; the
// 2026 runsc shim prints the JSON form, which containerd 1.6 cannot parse
// (testbed-notes §5a), so the guard always answers containerd plainly.
func ParseStartReply(out []byte) (string, error) {
	s := string(bytes.TrimSpace(out))
	if s == "" {
		return "", fmt.Errorf("%w: empty start reply", ErrBadStartReply)
	}
	if strings.HasPrefix(s, "{") {
		var r bootstrapReply
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrBadStartReply, s, err)
		}
		if r.Protocol != "" && r.Protocol != "ttrpc" {
			return "", fmt.Errorf("%w: protocol %q, only ttrpc is supported", ErrBadStartReply, r.Protocol)
		}
		if r.Version != 0 && r.Version != 2 {
			return "", fmt.Errorf("%w: task API version %d, only 2 is supported", ErrBadStartReply, r.Version)
		}
		s = r.Address
	}
	if !strings.HasPrefix(s, "unix://") || len(s) == len("unix://") || strings.ContainsAny(s, "\n\x00") {
		return "", fmt.Errorf("%w: %q is not a unix:// address", ErrBadStartReply, s)
	}
	return s, nil
}
