package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// The control socket: one per pod guard, through which each start action
// hands the guard a container and the listening socket containerd will
// reach that container's shim on. The exchange is one JSON request with
// the socket's file descriptor attached (SCM_RIGHTS) and one JSON reply.

// handoffTimeout bounds one hand-off, dial to reply: well above the 10 s
// the guard may take to connect to the runsc shim.
const handoffTimeout = 20 * time.Second

// maxHandoff bounds a hand-off request (ids and paths: well under 4 KiB).
const maxHandoff = 64 << 10

// handoffRequest is what the start action sends.
type handoffRequest struct {
	ID       string `json:"id"`
	Bundle   string `json:"bundle"`
	Delegate string `json:"delegate"`
	Address  string `json:"address"`
}

// handoffReply is what the guard answers. Closing means the guard is
// exiting and took nothing: start a new one.
type handoffReply struct {
	Error   string `json:"error,omitempty"`
	Closing bool   `json:"closing,omitempty"`
}

// errGuardGone: no guard took the hand-off (none listening, or the one
// there is exiting); the caller starts one.
var errGuardGone = errors.New("no guard server takes containers on this control socket")

// handOff gives the guard listening on control the container req and its
// listening socket l. It returns errGuardGone when no guard took it.
func handOff(control string, req handoffRequest, l *net.UnixListener) error {
	conn, err := net.DialTimeout("unix", socketPath(control), handoffTimeout)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w: %v", errGuardGone, err)
		}
		return fmt.Errorf("connect to guard control socket %s: %w", control, err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	_ = uc.SetDeadline(time.Now().Add(handoffTimeout))
	f, err := l.File()
	if err != nil {
		return fmt.Errorf("socket file: %w", err)
	}
	defer f.Close()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, _, err := uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("%w: send to %s: %v", errGuardGone, control, err)
	}
	_ = uc.CloseWrite()
	var reply handoffReply
	dec := json.NewDecoder(io.LimitReader(uc, maxHandoff))
	if err := dec.Decode(&reply); err != nil {
		// The guard exited with our request in its backlog.
		return fmt.Errorf("%w: no reply from %s: %v", errGuardGone, control, err)
	}
	if reply.Closing {
		return fmt.Errorf("%w: the guard at %s is exiting", errGuardGone, control)
	}
	if reply.Error != "" {
		return fmt.Errorf("guard at %s refused container %s: %s", control, req.ID, reply.Error)
	}
	return nil
}

// acceptControl serves hand-offs until the control socket is closed.
func (s *Server) acceptControl(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.G(s.ctx).WithError(err).Warn("control socket accept")
			}
			if s.isExiting() {
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go s.serveHandoff(conn)
	}
}

func (s *Server) isExiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exiting
}

// serveHandoff takes one container from a start action.
func (s *Server) serveHandoff(conn net.Conn) {
	defer conn.Close()
	reply := func(r handoffReply) {
		b, _ := json.Marshal(r)
		_, _ = conn.Write(b)
	}
	_ = conn.SetDeadline(time.Now().Add(handoffTimeout))
	if err := samePeerUser(conn); err != nil {
		log.G(s.ctx).WithError(err).Warn("refused a hand-off")
		return
	}
	req, l, err := readHandoff(conn.(*net.UnixConn))
	if errors.Is(err, io.EOF) {
		return
	}
	if err != nil {
		log.G(s.ctx).WithError(err).Warn("bad hand-off")
		reply(handoffReply{Error: err.Error()})
		return
	}
	if err := s.Add(req.ID, req.Bundle, req.Delegate, req.Address, l); err != nil {
		_ = l.Close()
		if errors.Is(err, ErrClosing) {
			reply(handoffReply{Closing: true})
			return
		}
		reply(handoffReply{Error: err.Error()})
		return
	}
	reply(handoffReply{})
}

// readHandoff reads a request and the one listening socket sent with it.
func readHandoff(uc *net.UnixConn) (handoffRequest, net.Listener, error) {
	buf := make([]byte, maxHandoff)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return handoffRequest{}, nil, fmt.Errorf("read hand-off: %w", err)
	}
	if n == 0 && oobn == 0 {
		return handoffRequest{}, nil, io.EOF // a probe (shim.CanConnect), not a hand-off
	}
	// The request may come in more than one read; the sender closes its
	// side after it.
	if rest, err := io.ReadAll(io.LimitReader(uc, int64(len(buf)-n))); err == nil {
		n += copy(buf[n:], rest)
	}
	fds := parseRights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if len(fds) != 1 {
		closeAll()
		return handoffRequest{}, nil, fmt.Errorf("hand-off carries %d file descriptors, want 1", len(fds))
	}
	var req handoffRequest
	dec := json.NewDecoder(bytes.NewReader(buf[:n]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		closeAll()
		return handoffRequest{}, nil, fmt.Errorf("parse hand-off: %w", err)
	}
	if !validID(req.ID) || !strings.HasPrefix(req.Delegate, "unix://") {
		closeAll()
		return handoffRequest{}, nil, fmt.Errorf("hand-off for container %q, runsc shim %q: invalid", req.ID, req.Delegate)
	}
	f := os.NewFile(uintptr(fds[0]), "container-socket")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return handoffRequest{}, nil, fmt.Errorf("hand-off socket: %w", err)
	}
	return req, l, nil
}

// parseRights returns every descriptor the control messages carry, so that
// all of them are closed on every path.
func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

// socketPath is the file of a unix:// address.
func socketPath(address string) string {
	return strings.TrimPrefix(address, "unix://")
}

// dialDelegate connects to a runsc shim.
func dialDelegate(address string) (net.Conn, error) {
	return dialShim(address, 10*time.Second)
}

// controlSocketAddress is the pod guard's control socket, and
// containerSocketAddress the socket containerd reaches one container's
// shim on. Both are derived like containerd's shim sockets, from keys the
// runsc shim never uses, so they never collide with its sockets.
func controlSocketAddress(ctx context.Context, f Flags, group string) (string, error) {
	return shimSocketAddress(ctx, socketDir(), f.Address, "runsc-guard-control/"+group)
}

func containerSocketAddress(ctx context.Context, f Flags, id string) (string, error) {
	return shimSocketAddress(ctx, socketDir(), f.Address, "runsc-guard/"+id)
}
