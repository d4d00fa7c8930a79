package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// delegateFile, in a container's bundle, holds the task API address of the
// runsc shim that serves it. The start action writes it; the guard reads it
// at Create, and for containers it has not seen since it started.
const delegateFile = "runsc-guard-delegate-address"

// Dialer connects to a runsc shim's task API address.
type Dialer func(address string) (net.Conn, error)

// delegate is one runsc shim process and the containers it serves.
type delegate struct {
	address string
	client  *ttrpc.Client
	task    taskAPI.TTRPCTaskService
	ids     map[string]struct{}
}

// Router is the guard's task service: it forwards each call to the runsc
// shim that owns the container named in the request.
type Router struct {
	dial Dialer
	// bundles is the directory holding the bundles of this namespace
	// (<state>/io.containerd.runtime.v2.task/<ns>), for containers whose
	// Create this process did not see.
	bundles string
	hook    CreateHook
	// empty is called, in its own goroutine, when the last container is
	// gone (shut down, or its runsc shim exited).
	empty func()

	mu       sync.Mutex
	byID     map[string]*delegate
	byAddr   map[string]*delegate
	bundleOf map[string]string // container id -> bundle, from Create
	last     time.Time
}

var _ taskAPI.TTRPCTaskService = (*Router)(nil)

// NewRouter returns a Router. hook may be nil (pure pass-through); empty may
// be nil.
func NewRouter(dial Dialer, bundles string, hook CreateHook, empty func()) *Router {
	return &Router{
		dial:     dial,
		bundles:  bundles,
		hook:     hook,
		empty:    empty,
		byID:     map[string]*delegate{},
		byAddr:   map[string]*delegate{},
		bundleOf: map[string]string{},
		last:     time.Now(),
	}
}

// Len returns how many containers the router serves.
func (r *Router) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// IdleSince returns when the router last had no container, or the zero
// time while it has some.
func (r *Router) IdleSince() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byID) > 0 {
		return time.Time{}
	}
	return r.last
}

// validID refuses container ids that would name a path outside bundles.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00")
}

// route returns the task client of the runsc shim serving id. bundle, when
// known (Create), is where the delegate address is read from.
func (r *Router) route(ctx context.Context, id, bundle string) (taskAPI.TTRPCTaskService, error) {
	r.mu.Lock()
	if d, ok := r.byID[id]; ok {
		r.mu.Unlock()
		return d.task, nil
	}
	r.mu.Unlock()

	if bundle == "" {
		if !validID(id) || r.bundles == "" {
			return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %q: %w", ErrUnknownContainer, id, errdefs.ErrNotFound))
		}
		bundle = filepath.Join(r.bundles, id)
	}
	address, err := ReadDelegateAddress(bundle)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: %q: %w", ErrUnknownContainer, id, errdefs.ErrNotFound)
		}
		return nil, errgrpc.ToGRPC(err)
	}
	d, err := r.attach(ctx, id, address)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return d.task, nil
}

// attach records that id is served by the runsc shim at address, connecting
// to it unless another container of the pod already did.
func (r *Router) attach(ctx context.Context, id, address string) (*delegate, error) {
	r.mu.Lock()
	d, ok := r.byAddr[address]
	r.mu.Unlock()
	if !ok {
		conn, err := r.dial(address)
		if err != nil {
			return nil, fmt.Errorf("connect to runsc shim %s for %s: %w", address, id, err)
		}
		nd := &delegate{address: address, ids: map[string]struct{}{}}
		nd.client = ttrpc.NewClient(conn, ttrpc.WithOnClose(func() { r.closed(nd) }))
		nd.task = taskAPI.NewTTRPCTaskClient(nd.client)

		r.mu.Lock()
		if d, ok = r.byAddr[address]; ok {
			// Lost a race with another call for the same runsc shim.
			r.mu.Unlock()
			nd.client.Close()
			r.mu.Lock()
		} else {
			d = nd
			r.byAddr[address] = d
		}
	} else {
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	if _, seen := r.byID[id]; !seen {
		log.G(ctx).WithFields(log.Fields{"container_id": id, "delegate": address}).Debug("route container to runsc shim")
	}
	d.ids[id] = struct{}{}
	r.byID[id] = d
	return d, nil
}

// bundle returns the bundle of a container: the one Create named, or the
// one containerd keeps in the namespace's bundles directory.
func (r *Router) bundle(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.bundleOf[id]; ok {
		return b
	}
	if r.bundles == "" || !validID(id) {
		return ""
	}
	return filepath.Join(r.bundles, id)
}

// forget drops id; the runsc shim connection goes when its last container
// does.
func (r *Router) forget(id string) {
	r.mu.Lock()
	d, ok := r.byID[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	delete(r.byID, id)
	delete(r.bundleOf, id)
	delete(d.ids, id)
	var closeClient *ttrpc.Client
	if len(d.ids) == 0 {
		delete(r.byAddr, d.address)
		closeClient = d.client
	}
	nowEmpty := len(r.byID) == 0
	if nowEmpty {
		r.last = time.Now()
	}
	r.mu.Unlock()
	if closeClient != nil {
		closeClient.Close()
	}
	if nowEmpty && r.empty != nil {
		go r.empty()
	}
}

// closed is called when a runsc shim connection ends: the runsc shim exited
// (after Shutdown, or it died) and its containers are gone with it.
func (r *Router) closed(d *delegate) {
	r.mu.Lock()
	if r.byAddr[d.address] == d {
		delete(r.byAddr, d.address)
	}
	gone := 0
	for id := range d.ids {
		if r.byID[id] == d {
			delete(r.byID, id)
			delete(r.bundleOf, id)
			gone++
		}
	}
	nowEmpty := gone > 0 && len(r.byID) == 0
	if nowEmpty {
		r.last = time.Now()
	}
	r.mu.Unlock()
	if gone > 0 {
		log.L.WithField("delegate", d.address).Info("runsc shim connection closed")
	}
	if nowEmpty && r.empty != nil {
		go r.empty()
	}
}

// Close closes every runsc shim connection.
func (r *Router) Close() {
	r.mu.Lock()
	ds := make([]*delegate, 0, len(r.byAddr))
	for _, d := range r.byAddr {
		ds = append(ds, d)
	}
	r.mu.Unlock()
	for _, d := range ds {
		d.client.Close()
	}
}

// isClosedErr reports whether err only says that the runsc shim went away,
// which is what a Shutdown that ends the runsc shim returns.
func isClosedErr(err error) bool {
	return errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), ttrpc.ErrClosed.Error())
}

// Create forwards the creation of a container, giving the CreateHook its
// say before and after.
func (r *Router) Create(ctx context.Context, req *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	t, err := r.route(ctx, req.ID, req.Bundle)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.bundleOf[req.ID] = req.Bundle
	r.mu.Unlock()
	if r.hook == nil {
		return t.Create(ctx, req)
	}
	after, err := r.hook.BeforeCreate(ctx, req)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err := t.Create(ctx, req)
	if err != nil || after == nil {
		return resp, err
	}
	if err := after(ctx, resp); err != nil {
		r.abort(ctx, t, req.ID)
		return nil, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

// abort removes a container the guard refused after the runsc shim created
// it, so that nothing of it is left running.
func (r *Router) abort(ctx context.Context, t taskAPI.TTRPCTaskService, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	l := log.G(ctx).WithField("container_id", id)
	if _, err := t.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: 9, All: true}); err != nil {
		l.WithError(err).Debug("kill refused container")
	}
	if _, err := t.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		l.WithError(err).Warn("delete refused container")
	}
}

// Shutdown forwards to the runsc shim and forgets the container; the guard
// exits when it has none left.
func (r *Router) Shutdown(ctx context.Context, req *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		if errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return &emptypb.Empty{}, nil
		}
		return nil, err
	}
	if _, err := t.Shutdown(ctx, req); err != nil && !isClosedErr(err) {
		return nil, err
	}
	r.forget(req.ID)
	return &emptypb.Empty{}, nil
}

// The rest forward unchanged.

func (r *Router) State(ctx context.Context, req *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.State(ctx, req)
}

func (r *Router) Start(ctx context.Context, req *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	resp, err := t.Start(ctx, req)
	sh, ok := r.hook.(StartHook)
	if err != nil || !ok || req.ExecID != "" {
		return resp, err
	}
	if err := sh.AfterStart(ctx, req.ID, r.bundle(req.ID)); err != nil {
		r.abort(ctx, t, req.ID)
		return nil, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

func (r *Router) Delete(ctx context.Context, req *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Delete(ctx, req)
}

func (r *Router) Pids(ctx context.Context, req *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Pids(ctx, req)
}

func (r *Router) Pause(ctx context.Context, req *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Pause(ctx, req)
}

func (r *Router) Resume(ctx context.Context, req *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Resume(ctx, req)
}

func (r *Router) Checkpoint(ctx context.Context, req *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Checkpoint(ctx, req)
}

func (r *Router) Kill(ctx context.Context, req *taskAPI.KillRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Kill(ctx, req)
}

func (r *Router) Exec(ctx context.Context, req *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Exec(ctx, req)
}

func (r *Router) ResizePty(ctx context.Context, req *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.ResizePty(ctx, req)
}

func (r *Router) CloseIO(ctx context.Context, req *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.CloseIO(ctx, req)
}

func (r *Router) Update(ctx context.Context, req *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Update(ctx, req)
}

func (r *Router) Wait(ctx context.Context, req *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Wait(ctx, req)
}

func (r *Router) Stats(ctx context.Context, req *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Stats(ctx, req)
}

func (r *Router) Connect(ctx context.Context, req *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	t, err := r.route(ctx, req.ID, "")
	if err != nil {
		return nil, err
	}
	return t.Connect(ctx, req)
}
