package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// failID makes the fake delegate fail any call for it.
const failID = "fail"

// call is one request a fakeTask received.
type call struct {
	method string
	req    proto.Message
	md     ttrpc.MD
}

// fakeTask is a stand-in runsc shim task service. Its answers carry its
// name, so a test can tell which delegate served a call.
type fakeTask struct {
	name     string
	onShut   func()
	onCreate func(*taskAPI.CreateTaskRequest)
	onStart  func(*taskAPI.StartRequest)
	mu       sync.Mutex
	calls    []call
	creates  int
	shutdown int
}

func (f *fakeTask) record(ctx context.Context, method, id string, req proto.Message) error {
	md, _ := ttrpc.GetMetadata(ctx)
	f.mu.Lock()
	f.calls = append(f.calls, call{method: method, req: proto.Clone(req), md: md})
	f.mu.Unlock()
	if id == failID {
		return errgrpc.ToGRPC(fmt.Errorf("fake %s %s: %w", f.name, method, errdefs.ErrFailedPrecondition))
	}
	return nil
}

func (f *fakeTask) last() call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return call{}
	}
	return f.calls[len(f.calls)-1]
}

var empty = &emptypb.Empty{}

func (f *fakeTask) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	if err := f.record(ctx, "State", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.StateResponse{ID: r.ID, Bundle: f.name, Pid: 104, Status: task.Status_RUNNING, ExecID: r.ExecID}, nil
}
func (f *fakeTask) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	if err := f.record(ctx, "Create", r.ID, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.creates++
	f.mu.Unlock()
	if f.onCreate != nil {
		f.onCreate(r)
	}
	return &taskAPI.CreateTaskResponse{Pid: uint32(os.Getpid())}, nil
}
func (f *fakeTask) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if err := f.record(ctx, "Start", r.ID, r); err != nil {
		return nil, err
	}
	if f.onStart != nil {
		f.onStart(r)
	}
	return &taskAPI.StartResponse{Pid: 101}, nil
}
func (f *fakeTask) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if err := f.record(ctx, "Delete", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.DeleteResponse{Pid: 102, ExitStatus: 7}, nil
}
func (f *fakeTask) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	if err := f.record(ctx, "Pids", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: 103}}}, nil
}
func (f *fakeTask) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Pause", r.ID, r)
}
func (f *fakeTask) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Resume", r.ID, r)
}
func (f *fakeTask) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Checkpoint", r.ID, r)
}
func (f *fakeTask) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Kill", r.ID, r)
}
func (f *fakeTask) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Exec", r.ID, r)
}
func (f *fakeTask) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "ResizePty", r.ID, r)
}
func (f *fakeTask) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "CloseIO", r.ID, r)
}
func (f *fakeTask) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return empty, f.record(ctx, "Update", r.ID, r)
}
func (f *fakeTask) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	if err := f.record(ctx, "Wait", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.WaitResponse{ExitStatus: 9}, nil
}
func (f *fakeTask) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	if err := f.record(ctx, "Stats", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: &anypb.Any{TypeUrl: "fake/" + f.name, Value: []byte{1, 2}}}, nil
}
func (f *fakeTask) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	if err := f.record(ctx, "Connect", r.ID, r); err != nil {
		return nil, err
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: 106, Version: f.name}, nil
}
func (f *fakeTask) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	if err := f.record(ctx, "Shutdown", r.ID, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.shutdown++
	f.mu.Unlock()
	if f.onShut != nil {
		f.onShut()
	}
	return empty, nil
}

var _ taskAPI.TTRPCTaskService = (*fakeTask)(nil)

// shortTempDir returns a temp dir short enough for unix socket paths
// (sun_path is 108 bytes; t.TempDir() can be longer).
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "rg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// serveFake serves svc on a unix socket at path and returns its address.
func serveFake(t testing.TB, path string, svc taskAPI.TTRPCTaskService) (string, *ttrpc.Server) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	taskAPI.RegisterTTRPCTaskService(s, svc)
	go s.Serve(context.Background(), l)
	t.Cleanup(func() { s.Close() })
	return "unix://" + path, s
}

// dialTask returns a task client for a unix:// address.
func dialTask(t testing.TB, address string) taskAPI.TTRPCTaskService {
	t.Helper()
	conn, err := net.Dial("unix", address[len("unix://"):])
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return taskAPI.NewTTRPCTaskClient(c)
}
