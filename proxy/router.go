package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// delegateFile, in a container's bundle, holds the task API address of the
// runsc shim that serves it. The start action writes it; the guard's
// delete action reads it to stop that runsc shim when the guard is gone.
const delegateFile = "runsc-guard-delegate-address"

// Dialer connects to a runsc shim's task API address.
type Dialer func(address string) (net.Conn, error)

// delegate is one runsc shim process and the containers it serves.
type delegate struct {
	address string
	client  *ttrpc.Client
	task    taskAPI.TTRPCTaskService
	ids     map[string]struct{}
	dead    bool // its connection closed (under Router.mu)
}

// entry is one container the guard serves.
type entry struct {
	bundle string
	d      *delegate
	// shuttingDown: a Shutdown is being forwarded, so the runsc shim
	// closing its connection is the expected end, not a death.
	shuttingDown bool
}

// Gone says why the router dropped a container.
type Gone int

const (
	// GoneShutdown: containerd shut the container's shim down.
	GoneShutdown Gone = iota
	// GoneDied: the runsc shim serving it exited without being asked to.
	GoneDied
)

// RouterEvents are the router's callbacks, each run in its own goroutine
// after the router's lock is released. Any may be nil.
type RouterEvents struct {
	// Gone: a container is no longer served.
	Gone func(id string, why Gone)
	// Idle: no container is left and no call is in flight.
	Idle func()
}

// ErrClosing: the guard decided to exit; a new container must go to a new
// guard process.
var ErrClosing = errors.New("runsc-guard server is exiting")

// Router is the guard's task service: it forwards each call to the runsc
// shim that owns the container named in the request. Containers are known
// to it only through Register, so a call for any other id is NotFound.
type Router struct {
	dial   Dialer
	hook   CreateHook
	events RouterEvents

	mu       sync.Mutex
	byID     map[string]*entry
	byAddr   map[string]*delegate
	inflight int
	closing  bool
	last     time.Time // when the last container went, or the router was made
	waits    map[waitKey]*waitCall
}

var _ taskAPI.TTRPCTaskService = (*Router)(nil)

// NewRouter returns a Router. hook may be nil (pure pass-through).
func NewRouter(dial Dialer, hook CreateHook, events RouterEvents) *Router {
	return &Router{
		dial:   dial,
		hook:   hook,
		events: events,
		byID:   map[string]*entry{},
		byAddr: map[string]*delegate{},
		waits:  map[waitKey]*waitCall{},
		last:   time.Now(),
	}
}

// Len returns how many containers the router serves.
func (r *Router) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// validID refuses container ids that would name a path outside bundles.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00")
}

// Register makes the router serve container id, whose runsc shim listens
// at address. It connects to that runsc shim at once (unless another
// container of the pod already did), so the guard learns of its death even
// before containerd sends a call. It fails with ErrClosing once the router
// decided to close: the caller must then start a new guard.
func (r *Router) Register(ctx context.Context, id, bundle, address string) error {
	if !validID(id) {
		return fmt.Errorf("register container %q: %w", id, errdefs.ErrInvalidArgument)
	}
	r.mu.Lock()
	d, err := r.registerLocked(id, bundle, address)
	if d != nil || err != nil {
		r.mu.Unlock()
		return err
	}
	// No connection to this runsc shim yet: dial unlocked, counting the
	// registration as activity so the router cannot decide to close
	// meanwhile, then check again.
	r.inflight++
	r.mu.Unlock()
	nd, derr := r.connect(address)
	r.mu.Lock()
	r.inflight--
	if derr != nil {
		r.mu.Unlock()
		r.maybeIdle()
		return fmt.Errorf("connect to runsc shim %s for %s: %w: %w", address, id, errdefs.ErrUnavailable, derr)
	}
	if _, raced := r.byAddr[address]; !raced {
		r.byAddr[address] = nd
		nd = nil
	}
	_, err = r.registerLocked(id, bundle, address)
	r.mu.Unlock()
	if nd != nil {
		nd.client.Close() // another registration connected first
	}
	if err != nil {
		r.maybeIdle()
	} else {
		log.G(ctx).WithFields(log.Fields{"container_id": id, "delegate": address}).Debug("serving container")
	}
	return err
}

// registerLocked adds id to the runsc shim at address when the router has a
// live connection to it, and returns that connection; nil, nil when it has
// none yet. Handing the same container over again is not an error (a start
// that timed out waiting for the reply retries).
func (r *Router) registerLocked(id, bundle, address string) (*delegate, error) {
	if r.closing {
		return nil, ErrClosing
	}
	if e, known := r.byID[id]; known {
		if e.d.address == address && e.bundle == bundle {
			return e.d, nil
		}
		return nil, fmt.Errorf("register container %s: %w", id, errdefs.ErrAlreadyExists)
	}
	d, ok := r.byAddr[address]
	if !ok || d.dead {
		return nil, nil
	}
	d.ids[id] = struct{}{}
	r.byID[id] = &entry{bundle: bundle, d: d}
	return d, nil
}

// connect dials a runsc shim and watches its connection.
func (r *Router) connect(address string) (*delegate, error) {
	conn, err := r.dial(address)
	if err != nil {
		return nil, err
	}
	d := &delegate{address: address, ids: map[string]struct{}{}}
	d.client = ttrpc.NewClient(conn, ttrpc.WithOnClose(func() { r.closed(d) }))
	d.task = taskAPI.NewTTRPCTaskClient(d.client)
	return d, nil
}

// begin looks up the runsc shim of id and counts a call in flight; end
// must follow.
func (r *Router) begin(id string) (*entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byID[id]
	if !ok {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %q: %w", ErrUnknownContainer, id, errdefs.ErrNotFound))
	}
	r.inflight++
	return e, nil
}

func (r *Router) end() {
	r.mu.Lock()
	r.inflight--
	if len(r.byID) == 0 {
		r.last = time.Now()
	}
	r.mu.Unlock()
	r.maybeIdle()
}

// maybeIdle tells the server when nothing is left to do.
func (r *Router) maybeIdle() {
	r.mu.Lock()
	idle := len(r.byID) == 0 && r.inflight == 0 && !r.closing
	r.mu.Unlock()
	if idle && r.events.Idle != nil {
		go r.events.Idle()
	}
}

// CloseIfIdle decides, atomically with Register, that the router takes no
// new container: it returns true when no container is left, no call is in
// flight and none was for at least grace. After true every Register fails
// with ErrClosing.
func (r *Router) CloseIfIdle(grace time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return true
	}
	if len(r.byID) > 0 || r.inflight > 0 || time.Since(r.last) < grace {
		return false
	}
	r.closing = true
	return true
}

// forget drops id after its Shutdown; the runsc shim connection goes when
// its last container does.
func (r *Router) forget(id string) {
	r.mu.Lock()
	e, ok := r.byID[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	closeClient := r.dropLocked(id, e)
	r.mu.Unlock()
	if closeClient != nil {
		closeClient.Close()
	}
	r.gone(id, GoneShutdown)
}

// dropLocked removes id and returns the runsc shim client to close when it
// served nothing else.
func (r *Router) dropLocked(id string, e *entry) *ttrpc.Client {
	delete(r.byID, id)
	delete(e.d.ids, id)
	if len(r.byID) == 0 {
		r.last = time.Now()
	}
	if len(e.d.ids) == 0 && r.byAddr[e.d.address] == e.d {
		delete(r.byAddr, e.d.address)
		return e.d.client
	}
	return nil
}

func (r *Router) gone(id string, why Gone) {
	if r.events.Gone != nil {
		go r.events.Gone(id, why)
	}
	r.maybeIdle()
}

// closed is called when a runsc shim connection ends. Containers still
// served by it died with it, unless a Shutdown for them is in flight.
func (r *Router) closed(d *delegate) {
	r.mu.Lock()
	d.dead = true
	if r.byAddr[d.address] == d {
		delete(r.byAddr, d.address)
	}
	var died []string
	for id := range d.ids {
		if e := r.byID[id]; e != nil && e.d == d && !e.shuttingDown {
			died = append(died, id)
			delete(r.byID, id)
		}
	}
	if len(died) > 0 && len(r.byID) == 0 {
		r.last = time.Now()
	}
	r.mu.Unlock()
	for _, id := range died {
		log.L.WithFields(log.Fields{"container_id": id, "delegate": d.address}).Warn("runsc shim exited: its container is gone")
		r.gone(id, GoneDied)
	}
}

// Close closes every runsc shim connection.
func (r *Router) Close() {
	r.mu.Lock()
	r.closing = true
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

// delegateErr classifies what a forwarded call returned. The runsc shim's
// own errors are already gRPC statuses and pass unchanged; a connection
// that closed under the call means its container is gone (NotFound, which
// containerd treats like a closed shim connection when it deletes).
func delegateErr(id string, err error) error {
	if err == nil {
		return nil
	}
	if isClosedErr(err) {
		return errgrpc.ToGRPC(fmt.Errorf("runsc shim of %s exited: %w", id, errdefs.ErrNotFound))
	}
	return err
}

// forward runs one task call on the runsc shim that owns id.
func forward[Resp any](ctx context.Context, r *Router, id string, call func(context.Context, taskAPI.TTRPCTaskService) (Resp, error)) (Resp, error) {
	e, err := r.begin(id)
	if err != nil {
		var zero Resp
		return zero, err
	}
	defer r.end()
	resp, err := call(ctx, e.d.task)
	return resp, delegateErr(id, err)
}

// refusal classifies an error of the CreateHook: the guard declined the
// container (FailedPrecondition, as containerd's runc shim answers a
// container it cannot run) unless the hook classified it otherwise.
func refusal(err error) error {
	if status.Code(errgrpc.ToGRPC(err)) == codes.Unknown {
		err = fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return errgrpc.ToGRPC(err)
}

// Create forwards the creation of a container, giving the CreateHook its
// say before and after.
//
// The creation runs to its end even when its caller goes away (containerd
// restarted, or gave up, mid-Create: ttrpc then cancels the request): the
// runsc shim is not told, so it finishes runsc create anyway. The caller
// saw the call fail and will never delete what it made, so the guard
// rolls the creation back (rollback). Without the guard, the runsc shim
// stays as containerd lost it (containerd/containerd#6860 cleans only
// shims that hold no process; the test bed's restart-create fault shows it
// on containerd 2.4).
func (r *Router) Create(ctx context.Context, req *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	resp, err := forward(ctx, r, req.ID, func(caller context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.CreateTaskResponse, error) {
		ctx := context.WithoutCancel(caller)
		if r.hook == nil {
			resp, err := t.Create(ctx, req)
			if err == nil && caller.Err() != nil {
				abort(ctx, t, req.ID)
			}
			return resp, err
		}
		after, err := r.hook.BeforeCreate(ctx, req)
		if err != nil {
			return nil, refusal(err)
		}
		if caller.Err() != nil { // gone before anything was made
			if after != nil {
				_ = after(ctx, nil)
			}
			return nil, caller.Err()
		}
		resp, err := t.Create(ctx, req)
		if err == nil && caller.Err() != nil {
			abort(ctx, t, req.ID)
			err = caller.Err()
		}
		if after == nil {
			return resp, err
		}
		if err != nil {
			_ = after(ctx, nil) // lets the hook undo what it prepared
			return resp, err
		}
		if err := after(ctx, resp); err != nil {
			abort(ctx, t, req.ID)
			return nil, refusal(err)
		}
		return resp, nil
	})
	if ctx.Err() != nil {
		r.rollback(ctx, req.ID)
	}
	return resp, err
}

// rollback ends what is left of a container whose Create lost its caller:
// the container is gone (abort), so its runsc shim is shut down and the
// guard forgets it, as containerd does after a Create that fails. The guard
// exits when it has nothing left; containerd, if it comes back to the
// container's socket, finds it gone and runs the delete action.
func (r *Router) rollback(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	log.G(ctx).WithField("container_id", id).Warn("the caller of Create went away before its answer: container removed, its runsc shim shut down")
	if _, err := r.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id}); err != nil {
		log.G(ctx).WithError(err).WithField("container_id", id).Warn("shut down the runsc shim of an abandoned Create")
	}
}

// abort removes a container the guard refused after the runsc shim created
// it, so that nothing of it is left running.
func abort(ctx context.Context, t taskAPI.TTRPCTaskService, id string) {
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

// Start forwards, then lets a StartHook check the started container.
func (r *Router) Start(ctx context.Context, req *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.StartResponse, error) {
		resp, err := t.Start(ctx, req)
		sh, ok := r.hook.(StartHook)
		if err != nil || !ok || req.ExecID != "" {
			return resp, err
		}
		if err := sh.AfterStart(ctx, req.ID, r.bundle(req.ID)); err != nil {
			abort(ctx, t, req.ID)
			return nil, refusal(err)
		}
		return resp, nil
	})
}

// bundle returns the bundle Register named for id.
func (r *Router) bundle(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[id]; ok {
		return e.bundle
	}
	return ""
}

// Shutdown forwards to the runsc shim and forgets the container; the guard
// exits when it has none left. A Shutdown for a container already gone
// succeeds, as the runsc shim's own does once it exited.
func (r *Router) Shutdown(ctx context.Context, req *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	r.mu.Lock()
	e, ok := r.byID[req.ID]
	if ok {
		e.shuttingDown = true
		r.inflight++
	}
	r.mu.Unlock()
	if !ok {
		return &emptypb.Empty{}, nil
	}
	defer r.end()
	if _, err := e.d.task.Shutdown(ctx, req); err != nil && !isClosedErr(err) {
		r.mu.Lock()
		e.shuttingDown = false
		died := e.d.dead && r.byID[req.ID] == e
		if died {
			// Its runsc shim went away under the failed call: nothing
			// will report it again, so it is gone now.
			r.dropLocked(req.ID, e)
		}
		r.mu.Unlock()
		if died {
			r.gone(req.ID, GoneDied)
		}
		return nil, err
	}
	r.forget(req.ID)
	return &emptypb.Empty{}, nil
}

// waitKey names one process of a container.
type waitKey struct{ id, execID string }

// waitCall is one Wait forwarded to a runsc shim, shared by every caller
// waiting on the same process.
type waitCall struct {
	done chan struct{}
	resp *taskAPI.WaitResponse
	err  error
}

// Wait forwards one Wait per process however many callers wait, and never
// cancels it when a caller goes away: containerd re-sends Wait after it
// restarts, and a Wait cancelled on the runsc shim's connection would make
// its later answer arrive on a dead stream (ttrpc logs "received message
// on inactive stream" at level error).
func (r *Router) Wait(ctx context.Context, req *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	e, err := r.begin(req.ID)
	if err != nil {
		return nil, err
	}
	k := waitKey{req.ID, req.ExecID}
	r.mu.Lock()
	w, ok := r.waits[k]
	if !ok {
		w = &waitCall{done: make(chan struct{})}
		r.waits[k] = w
		go func() {
			resp, err := e.d.task.Wait(context.WithoutCancel(ctx), req)
			r.mu.Lock()
			w.resp, w.err = resp, delegateErr(req.ID, err)
			delete(r.waits, k)
			r.mu.Unlock()
			close(w.done)
		}()
	}
	r.mu.Unlock()
	// A caller waiting is not activity that keeps the guard: it ends with
	// the container or the connection.
	r.end()
	select {
	case <-w.done:
		return w.resp, w.err
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
}

// The rest forward unchanged.

func (r *Router) State(ctx context.Context, req *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.StateResponse, error) {
		return t.State(ctx, req)
	})
}

func (r *Router) Delete(ctx context.Context, req *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.DeleteResponse, error) {
		return t.Delete(ctx, req)
	})
}

func (r *Router) Pids(ctx context.Context, req *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.PidsResponse, error) {
		return t.Pids(ctx, req)
	})
}

func (r *Router) Pause(ctx context.Context, req *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.Pause(ctx, req)
	})
}

func (r *Router) Resume(ctx context.Context, req *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.Resume(ctx, req)
	})
}

func (r *Router) Checkpoint(ctx context.Context, req *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.Checkpoint(ctx, req)
	})
}

func (r *Router) Kill(ctx context.Context, req *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.Kill(ctx, req)
	})
}

func (r *Router) Exec(ctx context.Context, req *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.Exec(ctx, req)
	})
}

func (r *Router) ResizePty(ctx context.Context, req *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.ResizePty(ctx, req)
	})
}

func (r *Router) CloseIO(ctx context.Context, req *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		return t.CloseIO(ctx, req)
	})
}

// followAgainAfter: a FollowHook follows an Update's container once more
// this long after the Update, for the cut kubelet makes to the pod cgroup
// only after its UpdateContainerResources calls succeeded.
const followAgainAfter = 2 * time.Second

// Update forwards, then lets a FollowHook make the pod's cgroups follow
// the resize, whatever the runsc shim answered (an old runsc may refuse
// the update while the pod cgroup already holds the new limit). kubelet
// raises the pod cgroup before it updates the containers and lowers it
// after (docs/upstream.md#resize), so the hook follows
// at once and again followAgainAfter later. The answer is the runsc shim's.
func (r *Router) Update(ctx context.Context, req *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*emptypb.Empty, error) {
		resp, err := t.Update(ctx, req)
		if fh, ok := r.hook.(FollowHook); ok {
			c := map[string]string{req.ID: r.bundle(req.ID)}
			bg := context.WithoutCancel(ctx)
			fh.Follow(bg, c)
			time.AfterFunc(followAgainAfter, func() { fh.Follow(bg, c) })
		}
		return resp, err
	})
}

// Containers returns the bundles of the containers the router serves, by
// id.
func (r *Router) Containers() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]string, len(r.byID))
	for id, e := range r.byID {
		m[id] = e.bundle
	}
	return m
}

func (r *Router) Stats(ctx context.Context, req *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.StatsResponse, error) {
		return t.Stats(ctx, req)
	})
}

func (r *Router) Connect(ctx context.Context, req *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return forward(ctx, r, req.ID, func(ctx context.Context, t taskAPI.TTRPCTaskService) (*taskAPI.ConnectResponse, error) {
		return t.Connect(ctx, req)
	})
}
