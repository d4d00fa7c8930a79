package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
)

// ReplyFormat is how a shim's start action wrote its reply.
type ReplyFormat string

const (
	// ReplyPlain is a bare "unix://..." address: every containerd from 1.6
	// on accepts it, and it is what the guard itself answers.
	ReplyPlain ReplyFormat = "plain"
	// ReplyJSON is containerd's JSON BootstrapParams, printed by shims built
	// on containerd >= 1.7's shim package (the 2026 runsc shim). containerd
	// 1.6 cannot parse it (it dials the JSON text as an address).
	ReplyJSON ReplyFormat = "json"
	// ReplyProto is the protobuf bootstrap.v1.BootstrapResult printed by
	// shims built on containerd >= 2.3's pkg/shim; only containerd >= 2.3
	// parses it.
	ReplyProto ReplyFormat = "protobuf"
)

// StartReply is what a shim's start action answered.
type StartReply struct {
	Address  string
	Protocol string
	Version  int
	Format   ReplyFormat
}

// jsonReply is containerd's JSON BootstrapParams.
type jsonReply struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// ParseStartReply returns the task API address from what a shim's start
// action printed. It tries the forms in containerd's own order
// (core/runtime/v2/shim.go parseStartResponse in containerd 2.3+): the
// protobuf BootstrapResult, then the JSON BootstrapParams, then a plain
// address. A protobuf parse that yields no address falls through to the
// text forms: a plain "unix://" address never parses as protobuf ('/' is
// an invalid wire type), and JSON rarely does.
//
// The guard answers containerd plainly whatever the runsc shim printed:
// containerd 1.6 dials the whole reply as an address
// (runtime/v2/binary.go in v1.6.20), so it accepts nothing else.
func ParseStartReply(out []byte) (StartReply, error) {
	var pb bootapi.BootstrapResult
	if len(out) > 0 && proto.Unmarshal(out, &pb) == nil && pb.GetAddress() != "" {
		return checkReply(StartReply{Address: pb.GetAddress(), Protocol: pb.GetProtocol(), Version: int(pb.GetVersion()), Format: ReplyProto}, out)
	}
	s := string(bytes.TrimSpace(out))
	if s == "" {
		return StartReply{}, fmt.Errorf("%w: empty start reply", ErrBadStartReply)
	}
	if strings.HasPrefix(s, "{") {
		var r jsonReply
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			return StartReply{}, fmt.Errorf("%w: %q: %v", ErrBadStartReply, s, err)
		}
		return checkReply(StartReply{Address: r.Address, Protocol: r.Protocol, Version: r.Version, Format: ReplyJSON}, out)
	}
	return checkReply(StartReply{Address: s, Format: ReplyPlain}, out)
}

// checkReply accepts only what the guard can front: task API version 2
// over ttrpc on a unix socket.
func checkReply(r StartReply, raw []byte) (StartReply, error) {
	if r.Protocol != "" && r.Protocol != "ttrpc" {
		return StartReply{}, fmt.Errorf("%w: protocol %q, only ttrpc is supported", ErrBadStartReply, r.Protocol)
	}
	if r.Version != 0 && r.Version != 2 {
		return StartReply{}, fmt.Errorf("%w: task API version %d, only 2 is supported", ErrBadStartReply, r.Version)
	}
	s := r.Address
	if !strings.HasPrefix(s, "unix://") || len(s) == len("unix://") || strings.ContainsAny(s, "\n\x00") {
		return StartReply{}, fmt.Errorf("%w: %q is not a unix:// address (reply %q)", ErrBadStartReply, s, clipBytes(raw, 200))
	}
	return r, nil
}

func clipBytes(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
