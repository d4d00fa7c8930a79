package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/types/known/emptypb"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
)

// TestDelegateDeathEndsItsContainerOnly: when the runsc shim of one
// container dies, containerd's connection for that container closes (its
// dead-shim cleanup runs on that), the container's socket goes, later calls
// for it are NotFound, and the rest of the pod is untouched.
func TestDelegateDeathEndsItsContainerOnly(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app": "d2"}, nil)
	ctx := context.Background()
	for id, c := range tb.clients {
		if _, err := c.State(ctx, &taskAPI.StateRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	tb.servers["d2"].Close() // the runsc shim of "app" dies
	waitFor(t, func() bool {
		_, err := tb.clients["app"].State(ctx, &taskAPI.StateRequest{ID: "app"})
		return err != nil && errors.Is(err, ttrpc.ErrClosed)
	}, "containerd's connection for app to close")
	if _, err := os.Stat(socketPath(tb.sockets["app"])); err == nil {
		t.Errorf("app's socket %s still there after its runsc shim died", tb.sockets["app"])
	}
	if _, err := net.Dial("unix", socketPath(tb.sockets["app"])); err == nil {
		t.Errorf("app's socket still accepts connections")
	}
	_, err := tb.clients["sandbox"].State(ctx, &taskAPI.StateRequest{ID: "app"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("State(app) after its runsc shim died: %v, want NotFound", err)
	}
	if _, err := tb.clients["sandbox"].State(ctx, &taskAPI.StateRequest{ID: "sandbox"}); err != nil {
		t.Errorf("State(sandbox) after app's runsc shim died: %v", err)
	}
	if stopped(tb.server, 500*time.Millisecond) {
		t.Fatal("guard stopped while the sandbox was alive")
	}
}

// TestShutdownIsNotDeath: a runsc shim that exits after its Shutdown does
// not make the guard close containerd's connection under the reply.
func TestShutdownIsNotDeath(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app": "d2"}, nil)
	tb.fakes["d2"].onShut = func() { tb.servers["d2"].Close() }
	ctx := context.Background()
	if _, err := tb.clients["app"].Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "app"}); err != nil {
		t.Fatalf("Shutdown(app): %v", err)
	}
	r := tb.server.Router()
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.byAddr[tb.delegate("d2")] == nil },
		"the guard to see d2's connection close")
	// containerd's connection stays open until containerd closes it: a
	// call on it is answered (NotFound), not cut off.
	_, err := tb.clients["app"].State(ctx, &taskAPI.StateRequest{ID: "app"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("State(app) on containerd's connection after the Shutdown: %v, want NotFound (the connection kept)", err)
	}
}

// dyingShutdown is a runsc shim's task client whose Shutdown fails with an
// error that is not a closed connection, after the connection closed under
// it (the order a real shim's exit can take).
type dyingShutdown struct {
	taskAPI.TTRPCTaskService
	die func()
}

func (d dyingShutdown) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	d.die()
	return nil, errgrpc.ToGRPC(fmt.Errorf("shim going away: %w", errdefs.ErrUnavailable))
}

// TestShutdownFailsAsShimDies: when the runsc shim dies under a failing
// Shutdown, the container is gone (its socket closed, later calls
// NotFound), not stuck in the guard for ever.
func TestShutdownFailsAsShimDies(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app": "d2"}, nil)
	r := tb.server.Router()
	r.mu.Lock()
	d := r.byID["app"].d
	d.task = dyingShutdown{TTRPCTaskService: d.task, die: func() { r.closed(d) }}
	r.mu.Unlock()
	if _, err := tb.clients["sandbox"].Shutdown(context.Background(), &taskAPI.ShutdownRequest{ID: "app"}); err == nil {
		t.Fatal("Shutdown(app) succeeded; the stand-in runsc shim failed it")
	}
	_, err := tb.clients["sandbox"].State(context.Background(), &taskAPI.StateRequest{ID: "app"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("State(app) after its runsc shim died under Shutdown: %v, want NotFound", err)
	}
	waitFor(t, func() bool { _, err := os.Stat(socketPath(tb.sockets["app"])); return err != nil }, "app's socket to go")
}

// TestHandoffAgain: a start that retries hands the same container over
// again; the guard takes it once.
func TestHandoffAgain(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, nil)
	l, _ := net.Listen("unix", tb.dir+"/dup.sock")
	if err := tb.server.Add("c1", filepath.Join(tb.bundles, "c1"), tb.delegate("d1"), "unix://"+tb.dir+"/dup.sock", l); err != nil {
		t.Errorf("same hand-off again: %v, want it taken", err)
	}
	if n := tb.server.Router().Len(); n != 1 {
		t.Errorf("router serves %d containers, want 1", n)
	}
	if _, err := tb.clients["c1"].State(context.Background(), &taskAPI.StateRequest{ID: "c1"}); err != nil {
		t.Errorf("State(c1) after the repeated hand-off: %v", err)
	}
}

// TestRegisterWhileClosing: a hand-off that races the guard's stop is
// refused (start then starts a new guard), never taken and lost.
func TestRegisterWhileClosing(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, nil)
	tb.server.Router().Close()
	l, _ := net.Listen("unix", tb.dir+"/late.sock")
	if err := tb.server.Add("c2", tb.dir, tb.delegate("d1"), "", l); !errors.Is(err, ErrClosing) {
		t.Errorf("Add after Close: %v, want ErrClosing", err)
	}
}

// blockingWait is a fake delegate whose Wait blocks until released.
type blockingWait struct {
	fakeTask
	release chan struct{}
	mu      sync.Mutex
	waits   int
}

func (b *blockingWait) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	b.mu.Lock()
	b.waits++
	b.mu.Unlock()
	<-b.release
	return &taskAPI.WaitResponse{ExitStatus: 42}, nil
}

// TestWaitSharedAndNeverCancelled: containerd re-sends Wait after a
// restart. The guard forwards one Wait per process, keeps it when its
// caller goes away (no "received message on inactive stream" error when
// the answer comes), and answers every caller.
func TestWaitSharedAndNeverCancelled(t *testing.T) {
	logs := &syncBuffer{}
	log.L.Logger.SetOutput(logs)
	t.Cleanup(func() { log.L.Logger.SetOutput(io.Discard) })

	dir := shortTempDir(t)
	d := &blockingWait{fakeTask: fakeTask{name: "d1"}, release: make(chan struct{})}
	addr, _ := serveFake(t, dir+"/d1.sock", d)
	s, err := NewServer(context.Background(), ServerOptions{Dial: func(a string) (net.Conn, error) { return net.Dial("unix", socketPath(a)) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(); s.Wait() })
	l, err := net.Listen("unix", dir+"/g.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("c1", dir, addr, "unix://"+dir+"/g.sock", l); err != nil {
		t.Fatal(err)
	}
	// The first caller is containerd before its restart: its connection
	// goes away while the Wait is pending.
	conn, err := net.Dial("unix", dir+"/g.sock")
	if err != nil {
		t.Fatal(err)
	}
	old := ttrpc.NewClient(conn)
	first := make(chan error, 1)
	go func() {
		_, err := taskAPI.NewTTRPCTaskClient(old).Wait(context.Background(), &taskAPI.WaitRequest{ID: "c1"})
		first <- err
	}()
	waitFor(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.waits == 1 }, "the first Wait to reach the runsc shim")
	old.Close()
	<-first
	second := make(chan *taskAPI.WaitResponse, 1)
	go func() {
		resp, err := dialTask(t, "unix://"+dir+"/g.sock").Wait(context.Background(), &taskAPI.WaitRequest{ID: "c1"})
		if err != nil {
			t.Error(err)
		}
		second <- resp
	}()
	time.Sleep(100 * time.Millisecond)
	close(d.release)
	if resp := <-second; resp == nil || resp.ExitStatus != 42 {
		t.Errorf("Wait after the caller's restart = %v, want exit 42", resp)
	}
	d.mu.Lock()
	n := d.waits
	d.mu.Unlock()
	if n != 1 {
		t.Errorf("runsc shim got %d Waits for one process, want 1", n)
	}
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(logs.String(), "inactive stream") {
		t.Errorf("the guard logged: %s", logs.String())
	}
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// refusingHook refuses every container with an unclassified error.
type refusingHook struct{}

func (refusingHook) BeforeCreate(context.Context, *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error) {
	return nil, errors.New("pod limit cannot be made to hold")
}

// TestErrorClasses: the guard's own errors reach containerd classified.
func TestErrorClasses(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, refusingHook{})
	ctx := context.Background()
	_, err := tb.guard.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1"})
	if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) || !strings.Contains(err.Error(), "cannot be made to hold") {
		t.Errorf("refused Create: %v, want FailedPrecondition with the reason", err)
	}
	_, err = tb.guard.State(ctx, &taskAPI.StateRequest{ID: "other"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("State of an unknown container: %v, want NotFound", err)
	}
	l, _ := net.Listen("unix", tb.dir+"/x.sock")
	err = tb.server.Add("c2", tb.dir, "unix://"+tb.dir+"/nobody.sock", "", l)
	if !errdefs.IsUnavailable(err) {
		t.Errorf("Add with an unreachable runsc shim: %v, want Unavailable", err)
	}
}

// TestHandoffRace: the last container's Shutdown racing a hand-off of a
// new container of the pod, in-process. Each hand-off is either taken by
// the guard, which then serves the container, or refused as closing, in
// which case the guard is gone; never taken and then lost.
func TestHandoffRace(t *testing.T) {
	for i := 0; i < 20; i++ {
		dir := shortTempDir(t)
		d := &fakeTask{name: "d1"}
		daddr, _ := serveFake(t, dir+"/d1.sock", d)
		ctl, err := net.Listen("unix", dir+"/ctl.sock")
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewServer(context.Background(), ServerOptions{Control: ctl, ControlPath: dir + "/ctl.sock", Grace: 20 * time.Millisecond,
			Dial: func(a string) (net.Conn, error) { return net.Dial("unix", socketPath(a)) }})
		if err != nil {
			t.Fatal(err)
		}
		l1, _ := net.Listen("unix", dir+"/c1.sock")
		if err := s.Add("c1", dir, daddr, "unix://"+dir+"/c1.sock", l1); err != nil {
			t.Fatal(err)
		}
		if _, err := dialTask(t, "unix://"+dir+"/c1.sock").Shutdown(context.Background(), &taskAPI.ShutdownRequest{ID: "c1"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i) * 2 * time.Millisecond) // around the 20 ms grace
		l2, _ := net.Listen("unix", dir+"/c2.sock")
		err = handOff("unix://"+dir+"/ctl.sock", handoffRequest{ID: "c2", Bundle: dir, Delegate: daddr, Address: "unix://" + dir + "/c2.sock"}, l2.(*net.UnixListener))
		switch {
		case err == nil:
			if stopped(s, 200*time.Millisecond) {
				t.Fatalf("run %d: the guard took c2 and exited", i)
			}
			if _, err := dialTask(t, "unix://"+dir+"/c2.sock").Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c2"}); err != nil {
				t.Fatalf("run %d: Create(c2) after the hand-off: %v", i, err)
			}
		case errors.Is(err, errGuardGone):
			if !stopped(s, 5*time.Second) {
				t.Fatalf("run %d: hand-off refused (%v) but the guard keeps running", i, err)
			}
			if _, err := os.Stat(dir + "/ctl.sock"); err == nil {
				t.Fatalf("run %d: the exiting guard left its control socket", i)
			}
		default:
			t.Fatalf("run %d: hand-off: %v", i, err)
		}
		l2.Close()
		s.Stop()
		s.Wait()
	}
}

// afterRefusingHook lets runsc create the container, then refuses it.
type afterRefusingHook struct{}

func (afterRefusingHook) BeforeCreate(context.Context, *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error) {
	return func(context.Context, *taskAPI.CreateTaskResponse) error {
		return errors.New("sandbox outside the pod cgroup after the move")
	}, nil
}

// TestAfterCreateRefusalAborts: a container the hook refuses after the
// runsc shim created it is killed and deleted, so nothing of it runs, and
// the Create fails with FailedPrecondition.
func TestAfterCreateRefusalAborts(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, afterRefusingHook{})
	_, err := tb.guard.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1"})
	if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("refused Create: %v, want FailedPrecondition", err)
	}
	var methods []string
	for _, c := range tb.fakes["d1"].calls {
		methods = append(methods, c.method)
	}
	if strings.Join(methods, ",") != "Create,Kill,Delete" {
		t.Errorf("runsc shim calls %v, want Create, Kill, Delete", methods)
	}
	if k, ok := tb.fakes["d1"].calls[1].req.(*taskAPI.KillRequest); !ok || k.Signal != 9 || !k.All {
		t.Errorf("kill %v, want SIGKILL to all processes", tb.fakes["d1"].calls[1].req)
	}
}

// TestRegisterTwice: a container handed over twice is refused, and the
// refusal leaves nothing counted in flight (the guard can still exit).
func TestRegisterTwice(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, nil)
	l, _ := net.Listen("unix", tb.dir+"/again.sock")
	err := tb.server.Add("c1", tb.dir, "unix://"+tb.dir+"/other.sock", "", l)
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Add(c1): %v, want AlreadyExists", err)
	}
	tb.server.Router().mu.Lock()
	n := tb.server.Router().inflight
	tb.server.Router().mu.Unlock()
	if n != 0 {
		t.Errorf("%d calls in flight after the refused hand-off, want 0", n)
	}
}

// afterHook records what each Create's after func was given: true for a
// created container, false for the undo of a failed one.
type afterHook struct {
	mu     sync.Mutex
	afters []bool
}

func (h *afterHook) BeforeCreate(context.Context, *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error) {
	return func(_ context.Context, resp *taskAPI.CreateTaskResponse) error {
		h.mu.Lock()
		h.afters = append(h.afters, resp != nil)
		h.mu.Unlock()
		return nil
	}, nil
}

// TestCreateWhoseCallerWentAway: containerd restarts while runsc create
// runs (the test bed's restart-create fault). The runsc shim finishes the
// creation; containerd never learns of it. The guard removes the container,
// shuts its runsc shim down and forgets it, so nothing of it is left, and
// lets the hook undo what it prepared.
func TestCreateWhoseCallerWentAway(t *testing.T) {
	for _, hooked := range []bool{false, true} {
		t.Run(fmt.Sprintf("hook=%v", hooked), func(t *testing.T) {
			hook := &afterHook{}
			var h CreateHook
			if hooked {
				h = hook
			}
			tb := newTestBed(t, map[string]string{"c1": "d1", "c2": "d2"}, h)
			f := tb.fakes["d1"]
			release := make(chan struct{})
			f.onCreate = func(*taskAPI.CreateTaskRequest) { <-release }
			conn, err := net.Dial("unix", socketPath(tb.sockets["c1"]))
			if err != nil {
				t.Fatal(err)
			}
			containerd := ttrpc.NewClient(conn)
			done := make(chan error, 1)
			go func() {
				_, err := taskAPI.NewTTRPCTaskClient(containerd).Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1"})
				done <- err
			}()
			waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.creates == 1 }, "Create to reach the runsc shim")
			conns := func() int {
				tb.server.mu.Lock()
				cs := tb.server.sockets["c1"]
				tb.server.mu.Unlock()
				cs.mu.Lock()
				defer cs.mu.Unlock()
				return len(cs.conns)
			}
			before := conns()
			containerd.Close() // containerd restarts
			if err := <-done; err == nil {
				t.Fatal("Create answered a caller that went away")
			}
			// ttrpc cancels the call's context before it closes the
			// connection: once the guard's side is closed, it knows.
			waitFor(t, func() bool { return conns() == before-1 }, "the guard to see the connection close")
			close(release)
			waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.shutdown == 1 }, "the runsc shim to be shut down")
			var got []string
			f.mu.Lock()
			for _, c := range f.calls {
				got = append(got, c.method)
			}
			f.mu.Unlock()
			if want := "Create Kill Delete Shutdown"; strings.Join(got, " ") != want {
				t.Errorf("runsc shim got %q, want %q", got, want)
			}
			if _, err := tb.clients["c2"].State(context.Background(), &taskAPI.StateRequest{ID: "c1"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
				t.Errorf("State of the rolled back container: %v, want NotFound", err)
			}
			if n := tb.server.Router().Len(); n != 1 {
				t.Errorf("the guard serves %d containers, want 1 (c2 only)", n)
			}
			hook.mu.Lock()
			defer hook.mu.Unlock()
			if hooked && (len(hook.afters) != 1 || hook.afters[0]) {
				t.Errorf("hook's after got %v, want one undo (false)", hook.afters)
			}
		})
	}
}
