package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// idleTimeout is how long a guard process with no container waits (for the
// Create that should follow its start) before it exits.
const idleTimeout = 2 * time.Minute

// lastReplyGrace is how long the guard waits after its last container is
// gone before it stops serving.
const lastReplyGrace = 300 * time.Millisecond

// HookFactory builds the CreateHook of a guard process from its
// configuration. The sandbox fix installs one (see fix.go); nil means pure
// pass-through.
var HookFactory func(cfg Config) CreateHook

// Serve is the guard's long-running server for one pod: it serves the task
// API on the socket inherited as fd 3 until its last container is gone.
func Serve(ctx context.Context, f Flags) error {
	cfg, err := LoadConfig(ConfigPath())
	if err != nil {
		return err
	}
	bundle, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("get bundle: %w", err)
	}
	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		return fmt.Errorf("inherit socket: %w", err)
	}
	addr, err := guardSocketAddress(ctx, f, f.ID)
	if err != nil {
		return fmt.Errorf("guard socket address: %w", err)
	}
	var hook CreateHook
	if HookFactory != nil {
		hook = HookFactory(cfg)
	}
	srv, err := NewServer(ctx, ServerOptions{
		Listener: l,
		Bundles:  filepath.Dir(bundle),
		Hook:     hook,
		Dial:     func(a string) (net.Conn, error) { return shim.AnonDialer(a, 10*time.Second) },
		Idle:     idleTimeout,
	})
	if err != nil {
		return err
	}

	// SIGPIPE is harmless (the log fifo's reader went away with a
	// containerd restart); SIGTERM/SIGINT end the server like Shutdown.
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
	log.G(ctx).WithFields(log.Fields{"group": f.ID, "address": addr}).Info("guard server serving")
	err = srv.Wait()
	if rerr := shim.RemoveSocket(addr); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		log.G(ctx).WithError(rerr).Warn("remove guard socket")
	}
	log.G(ctx).WithField("group", f.ID).Info("guard server exited")
	return err
}

// ServerOptions configure a Server.
type ServerOptions struct {
	Listener net.Listener
	Bundles  string
	Hook     CreateHook
	Dial     Dialer
	// Idle is how long the server runs with no container before it stops;
	// zero means never for idleness alone.
	Idle time.Duration
}

// Server serves the guard's task API on a listener until its last
// container is gone, or Stop.
type Server struct {
	router *Router
	ttrpc  *ttrpc.Server
	stop   chan struct{}
	once   sync.Once
	done   chan error
}

// NewServer starts serving.
func NewServer(ctx context.Context, o ServerOptions) (*Server, error) {
	ts, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return nil, fmt.Errorf("new ttrpc server: %w", err)
	}
	s := &Server{ttrpc: ts, stop: make(chan struct{}), done: make(chan error, 1)}
	s.router = NewRouter(o.Dial, o.Bundles, o.Hook, func() {
		// Let the reply to the last Shutdown reach containerd first: ttrpc
		// may see a connection as idle while its last reply is still being
		// written. A container that arrives meanwhile keeps the guard.
		time.Sleep(lastReplyGrace)
		if s.router.Len() == 0 {
			log.G(ctx).Info("no container left, guard server stopping")
			s.Stop()
		}
	})
	taskAPI.RegisterTTRPCTaskService(ts, s.router)

	serveErr := make(chan error, 1)
	go func() { serveErr <- ts.Serve(ctx, o.Listener) }()
	go func() {
		var tick <-chan time.Time
		if o.Idle > 0 {
			t := time.NewTicker(o.Idle / 4)
			defer t.Stop()
			tick = t.C
		}
		var err error
	loop:
		for {
			select {
			case <-s.stop:
				break loop
			case err = <-serveErr:
				if errors.Is(err, ttrpc.ErrServerClosed) {
					err = nil
				}
				break loop
			case <-tick:
				if since := s.router.IdleSince(); !since.IsZero() && time.Since(since) >= o.Idle {
					log.G(ctx).WithField("idle", o.Idle).Info("no container left, guard server stopping")
					break loop
				}
			}
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := ts.Shutdown(sctx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
			log.G(ctx).WithError(serr).Debug("ttrpc shutdown")
		}
		_ = ts.Close()
		s.router.Close()
		s.done <- err
	}()
	return s, nil
}

// Router returns the server's task service.
func (s *Server) Router() *Router { return s.router }

// Stop makes the server stop; Wait returns once it has.
func (s *Server) Stop() { s.once.Do(func() { close(s.stop) }) }

// Wait blocks until the server stopped.
func (s *Server) Wait() error { return <-s.done }
