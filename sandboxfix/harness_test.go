package sandboxfix

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"google.golang.org/protobuf/proto"
)

// The fix's tests drive it as the guard's router does (proxy/router.go):
// BeforeCreate, then the runsc shim's Create, then the check after it; the
// runsc shim's Start, then AfterStart for a container (not an exec). The
// runsc shim is a recorder whose onCreate and onStart play what runsc does
// on the host. What the router does with the hook's errors (classify them,
// kill and delete a refused container) is proxy's and tested there.

// call is one request the fake runsc shim received.
type call struct {
	method string
	req    proto.Message
}

// fakeRunscShim records what the router forwards.
type fakeRunscShim struct {
	onCreate func(*taskAPI.CreateTaskRequest)
	onStart  func(*taskAPI.StartRequest)
	// createErr fails its Create (after onCreate).
	createErr error
	mu        sync.Mutex
	calls     []call
}

func (f *fakeRunscShim) record(method string, req proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{method: method, req: proto.Clone(req)})
}

func (f *fakeRunscShim) last() call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return call{}
	}
	return f.calls[len(f.calls)-1]
}

// router plays the guard's router in front of one fake runsc shim.
type router struct {
	fix     *SandboxFix
	d       *fakeRunscShim
	bundles map[string]string
}

func (r *router) Create(ctx context.Context, req *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	r.bundles[req.ID] = req.Bundle
	after, err := r.fix.BeforeCreate(ctx, req)
	if err != nil {
		return nil, err
	}
	r.d.record("Create", req)
	if r.d.onCreate != nil {
		r.d.onCreate(req)
	}
	if r.d.createErr != nil {
		if after != nil {
			_ = after(ctx, nil)
		}
		return nil, r.d.createErr
	}
	resp := &taskAPI.CreateTaskResponse{Pid: uint32(os.Getpid())}
	if after != nil {
		if err := after(ctx, resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (r *router) Start(ctx context.Context, req *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	r.d.record("Start", req)
	if r.d.onStart != nil {
		r.d.onStart(req)
	}
	if req.ExecID == "" {
		if err := r.fix.AfterStart(ctx, req.ID, r.bundles[req.ID]); err != nil {
			return nil, err
		}
	}
	return &taskAPI.StartResponse{Pid: 101}, nil
}

// testBed is a fix behind the router, with a bundles directory.
type testBed struct {
	dir, bundles string
	guard        *router
	fakes        map[string]*fakeRunscShim
}

// newTestBed: containers maps container ids to the fake runsc shim "d1"
// (one runsc shim serves them all here).
func newTestBed(t testing.TB, containers map[string]string, fix *SandboxFix) *testBed {
	t.Helper()
	dir := t.TempDir()
	tb := &testBed{dir: dir, bundles: filepath.Join(dir, "k8s.io"), fakes: map[string]*fakeRunscShim{"d1": {}}}
	tb.guard = &router{fix: fix, d: tb.fakes["d1"], bundles: map[string]string{}}
	for id := range containers {
		if err := os.MkdirAll(filepath.Join(tb.bundles, id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}
