package proxy

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// followHook records each Follow.
type followHook struct {
	mu    sync.Mutex
	calls []map[string]string
	// seen gets a value at each call (buffered, never blocks).
	seen chan struct{}
}

func newFollowHook() *followHook { return &followHook{seen: make(chan struct{}, 100)} }

func (*followHook) BeforeCreate(context.Context, *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error) {
	return nil, nil
}

func (h *followHook) Follow(_ context.Context, containers map[string]string) {
	h.mu.Lock()
	h.calls = append(h.calls, containers)
	h.mu.Unlock()
	select {
	case h.seen <- struct{}{}:
	default:
	}
}

func (h *followHook) all() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]string(nil), h.calls...)
}

// TestUpdateFollows: after forwarding an Update the router lets the hook
// follow the named container, also when the runsc shim refused the update
// (Debian's runsc and the 2026 shim), and answers what the runsc shim did.
func TestUpdateFollows(t *testing.T) {
	hook := newFollowHook()
	tb := newTestBed(t, map[string]string{"c1": "d1", failID: "d1"}, hook)
	ctx := context.Background()
	if _, err := tb.clients["c1"].Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c1"}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	_, err := tb.clients[failID].Update(ctx, &taskAPI.UpdateTaskRequest{ID: failID})
	if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("Update the runsc shim refused: %v, want its FailedPrecondition", err)
	}
	_, err = tb.clients["c1"].Update(ctx, &taskAPI.UpdateTaskRequest{ID: "other"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("Update of an unknown container: %v, want NotFound", err)
	}
	// Each Update is followed at once and again followAgainAfter later
	// (kubelet lowers the pod cgroup after the Update).
	want := []string{"c1", failID, "c1", failID}
	if calls := hook.all(); len(calls) != 2 {
		t.Fatalf("Follow calls right after the Updates = %v, want one each", calls)
	}
	deadline := time.Now().Add(followAgainAfter + 5*time.Second)
	for len(hook.all()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	calls := hook.all()
	if len(calls) != len(want) {
		t.Fatalf("Follow calls = %v, want %v", calls, want)
	}
	if calls[2]["c1"] == "" { // the two timers may fire in either order
		calls[2], calls[3] = calls[3], calls[2]
	}
	for i, id := range want {
		if len(calls[i]) != 1 || calls[i][id] != filepath.Join(tb.bundles, id) {
			t.Errorf("Follow %d = %v, want %s with its bundle", i, calls[i], id)
		}
	}
	if got := tb.fakes["d1"].last(); got.method != "Update" {
		t.Errorf("runsc shim's last call %s, want the Update", got.method)
	}
}

// TestFollowEvery: the server follows every container it serves on its
// interval, and stops with the server.
func TestFollowEvery(t *testing.T) {
	dir := shortTempDir(t)
	d := &fakeTask{name: "d1"}
	daddr, _ := serveFake(t, dir+"/d1.sock", d)
	hook := newFollowHook()
	s, err := NewServer(context.Background(), ServerOptions{Hook: hook, FollowEvery: 20 * time.Millisecond,
		Dial: func(a string) (net.Conn, error) { return net.Dial("unix", socketPath(a)) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		l, err := net.Listen("unix", dir+"/"+id+".sock")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Add(id, dir+"/b/"+id, daddr, "unix://"+dir+"/"+id+".sock", l); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-hook.seen:
		case <-time.After(5 * time.Second):
			t.Fatal("no Follow within 5 s of a 20 ms interval")
		}
	}
	last := hook.all()[len(hook.all())-1]
	if len(last) != 2 || last["c1"] != dir+"/b/c1" || last["c2"] != dir+"/b/c2" {
		t.Errorf("Follow = %v, want both containers with their bundles", last)
	}
	s.Stop()
	s.Wait()
	n := len(hook.all())
	time.Sleep(100 * time.Millisecond)
	if got := len(hook.all()); got > n+1 {
		t.Errorf("%d Follows after the server stopped", got-n)
	}
}
