package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"net"
	"os"
	"os/signal"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// idleTimeout is how long a guard process that was never handed a
// container waits before it exits (its start died before the hand-off).
const idleTimeout = 2 * time.Minute

// lastReplyGrace is how long the guard waits after its last container is
// gone (and its last call answered) before it stops serving: the reply to
// the last Shutdown must reach containerd first.
const lastReplyGrace = 300 * time.Millisecond

// Serve is the guard's long-running server for one pod. It inherits the
// pod's control socket as fd 3; each container is handed to it over that
// socket with a listening socket of its own, which is the address
// containerd knows the container's shim by.
//
// newHook (nil: pure pass-through) gives the server its CreateHook.
func Serve(ctx context.Context, f Flags, newHook NewHook) error {
	cfg, err := config.Load(config.Path())
	if err != nil {
		return err
	}
	fd3 := os.NewFile(3, "control")
	l, err := net.FileListener(fd3)
	// FileListener dups the descriptor: close ours, or the socket would keep
	// listening after the guard closed its listener.
	fd3.Close()
	if err != nil {
		return fmt.Errorf("inherit control socket: %w", err)
	}
	addr, err := controlSocketAddress(ctx, f, f.ID)
	if err != nil {
		return fmt.Errorf("control socket address: %w", err)
	}
	var hook CreateHook
	if newHook != nil {
		hook = newHook(cfg)
	}
	srv, err := NewServer(ctx, ServerOptions{
		Control:     l,
		ControlPath: socketPath(addr),
		Hook:        hook,
		Dial:        func(a string) (net.Conn, error) { return dialDelegate(a) },
		Idle:        idleTimeout,
		FollowEvery: cfg.FollowInterval(),
	})
	if err != nil {
		return err
	}

	// SIGPIPE is harmless (the log fifo's reader went away with a
	// containerd restart); SIGTERM/SIGINT end the server.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT)
	go func() {
		for s := range signals {
			if s != unix.SIGPIPE {
				log.G(ctx).WithField("signal", s).Info("guard server stopping")
				srv.Stop()
			}
		}
	}()
	log.G(ctx).WithFields(log.Fields{"group": f.ID, "control": addr}).Info("guard server serving")
	err = srv.Wait()
	log.G(ctx).WithField("group", f.ID).Info("guard server exited")
	return err
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// Control accepts hand-offs of containers (see handOff); nil for a
	// server that is handed containers only through Add.
	Control net.Listener
	// ControlPath is the file Control is bound to: removed when the server
	// decides to exit, if it is still the socket the server was given.
	ControlPath string
	Hook        CreateHook
	Dial        Dialer
	// Idle is how long the server runs before its first container before it
	// stops; zero means never for that alone.
	Idle time.Duration
	// Grace overrides lastReplyGrace (tests).
	Grace time.Duration
	// FollowEvery is how often a FollowHook follows every container the
	// server serves, besides after each Update; zero never.
	FollowEvery time.Duration
}

// Server serves the guard's task API for one pod: one listening socket per
// container, so that containerd's connection for a container ends when the
// runsc shim serving it dies, as it would without the guard.
type Server struct {
	ctx     context.Context
	router  *Router
	ttrpc   *ttrpc.Server
	grace   time.Duration
	control net.Listener
	ctlFile fileID

	mu      sync.Mutex
	sockets map[string]*ctrSocket
	exiting bool

	stop chan struct{}
	once sync.Once
	done chan error
}

// NewServer starts serving.
func NewServer(ctx context.Context, o ServerOptions) (*Server, error) {
	ts, err := ttrpc.NewServer()
	if err != nil {
		return nil, fmt.Errorf("new ttrpc server: %w", err)
	}
	s := &Server{
		ctx: ctx, ttrpc: ts, grace: o.Grace, control: o.Control,
		sockets: map[string]*ctrSocket{},
		stop:    make(chan struct{}), done: make(chan error, 1),
	}
	if s.grace == 0 {
		s.grace = lastReplyGrace
	}
	if o.ControlPath != "" {
		s.ctlFile = statSocket(o.ControlPath)
	}
	s.router = NewRouter(o.Dial, o.Hook, RouterEvents{Gone: s.gone, Idle: s.idle})
	taskAPI.RegisterTTRPCTaskService(ts, s.router)
	if o.Control != nil {
		go s.acceptControl(o.Control)
	}
	if o.Idle > 0 {
		time.AfterFunc(o.Idle, s.idle)
	}
	if fh, ok := o.Hook.(FollowHook); ok && o.FollowEvery > 0 {
		go s.followEvery(fh, o.FollowEvery)
	}
	go func() {
		<-s.stop
		s.shutdown()
	}()
	return s, nil
}

// followEvery follows the pod's containers on an interval until the
// server stops: kubelet resizes some pods without an Update reaching a
// shim (a pod-level resize that leaves each container's own resources
// alone, KEP-5419; an operator's systemctl set-property), which the
// Update alone would miss.
func (s *Server) followEvery(fh FollowHook, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if c := s.router.Containers(); len(c) > 0 {
				fh.Follow(s.ctx, c)
			}
		}
	}
}

// Router returns the server's task service.
func (s *Server) Router() *Router { return s.router }

// Stop makes the server stop; Wait returns once it has.
func (s *Server) Stop() { s.once.Do(func() { close(s.stop) }) }

// Wait blocks until the server stopped.
func (s *Server) Wait() error {
	err := <-s.done
	s.done <- err
	return err
}

// Add serves container id on l: its runsc shim listens at delegate.
// address is the file l is bound to (removed when the container is gone,
// if it is still that socket). It fails with ErrClosing when the server is
// exiting.
func (s *Server) Add(id, bundle, delegate, address string, l net.Listener) error {
	cs := &ctrSocket{Listener: l, conns: map[net.Conn]struct{}{}}
	if address != "" {
		cs.path = socketPath(address)
		cs.file = statSocket(cs.path)
	}
	// The socket is known before the router is, so that a death reported
	// right after the registration finds it to close.
	s.mu.Lock()
	_, serving := s.sockets[id]
	if !serving {
		s.sockets[id] = cs
	}
	s.mu.Unlock()
	if err := s.router.Register(s.ctx, id, bundle, delegate); err != nil {
		if !serving {
			s.mu.Lock()
			if s.sockets[id] == cs {
				delete(s.sockets, id)
			}
			s.mu.Unlock()
		}
		return err
	}
	if serving {
		// The same container handed over again (its start retried): the
		// socket is served already.
		_ = l.Close()
		return nil
	}
	go func() {
		if err := s.ttrpc.Serve(s.ctx, cs); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) && !cs.isClosed() {
			log.G(s.ctx).WithError(err).WithField("container_id", id).Warn("serve container socket")
		}
	}()
	log.G(s.ctx).WithFields(log.Fields{"container_id": id, "delegate": delegate, "address": address}).Info("guard serving container")
	return nil
}

// gone closes the socket of a container the router dropped. After a
// Shutdown, containerd closes its connections itself; when the runsc shim
// died they are closed here, which is how containerd learns of the death
// (its dead-shim cleanup runs when its connection to the shim closes).
func (s *Server) gone(id string, why Gone) {
	s.mu.Lock()
	cs := s.sockets[id]
	delete(s.sockets, id)
	s.mu.Unlock()
	if cs == nil {
		return
	}
	cs.close(why == GoneDied)
}

// idle is called when the router has nothing left: after the grace, and
// atomically with any new hand-off, the server decides to exit.
func (s *Server) idle() {
	time.AfterFunc(s.grace, func() {
		if s.router.CloseIfIdle(s.grace) {
			log.G(s.ctx).Info("no container left, guard server stopping")
			s.Stop()
		}
	})
}

// shutdown stops serving: the control socket first (a start that finds it
// gone spawns a new guard), then the task API.
func (s *Server) shutdown() {
	s.router.Close() // no Register after this point
	s.closeControl()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 5*time.Second)
	defer cancel()
	if serr := s.ttrpc.Shutdown(ctx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		log.G(s.ctx).WithError(serr).Debug("ttrpc shutdown")
	}
	_ = s.ttrpc.Close()
	s.mu.Lock()
	socks := s.sockets
	s.sockets = map[string]*ctrSocket{}
	s.mu.Unlock()
	for _, cs := range socks {
		cs.close(true)
	}
	s.done <- nil
}

// closeControl stops taking hand-offs and removes the control socket file,
// unless it is no longer the one this server was given.
func (s *Server) closeControl() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exiting || s.control == nil {
		s.exiting = true
		return
	}
	s.exiting = true
	s.ctlFile.remove()
	_ = s.control.Close()
}

// ctrSocket is a container's listening socket and the connections
// accepted on it.
type ctrSocket struct {
	net.Listener
	path string
	file fileID

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Accept accepts only connections from processes of the guard's own user
// (containerd), like containerd's shims.
func (c *ctrSocket) Accept() (net.Conn, error) {
	for {
		conn, err := c.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := samePeerUser(conn); err != nil {
			log.L.WithError(err).Warn("refused a connection to a container socket")
			conn.Close()
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.Close()
			return nil, net.ErrClosed
		}
		c.conns[conn] = struct{}{}
		c.mu.Unlock()
		return &trackedConn{Conn: conn, s: c}, nil
	}
}

func (c *ctrSocket) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close stops listening and removes the socket file; with conns, it also
// closes every connection accepted on it.
func (c *ctrSocket) close(conns bool) {
	c.mu.Lock()
	wasClosed := c.closed
	c.closed = true
	var open []net.Conn
	if conns {
		for conn := range c.conns {
			open = append(open, conn)
		}
	}
	c.mu.Unlock()
	if !wasClosed {
		c.file.remove()
		_ = c.Listener.Close()
	}
	for _, conn := range open {
		_ = conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	s *ctrSocket
}

func (t *trackedConn) Close() error {
	t.s.mu.Lock()
	delete(t.s.conns, t.Conn)
	t.s.mu.Unlock()
	return t.Conn.Close()
}

// sameUser is the peer check of containerd's own shims (same uid and gid),
// applied by hand because the guard wraps the connections it accepts.
var sameUser = ttrpc.UnixSocketRequireSameUser()

// samePeerUser refuses a unix connection from another user.
func samePeerUser(conn net.Conn) error {
	_, _, err := sameUser.Handshake(context.Background(), conn)
	return err
}

// fileID names one socket file, so that only that file is ever removed:
// a path that another guard has bound meanwhile is left alone.
type fileID struct {
	path     string
	dev, ino uint64
}

func statSocket(path string) fileID {
	var st unix.Stat_t
	if path == "" || unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fileID{}
	}
	return fileID{path: path, dev: st.Dev, ino: st.Ino}
}

func (f fileID) remove() {
	if f.path == "" {
		return
	}
	if cur := statSocket(f.path); cur == f {
		_ = os.Remove(f.path)
	}
}
