package proxy

import (
	"context"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// testBed is a guard Server in front of fake delegates, all in-process,
// over real ttrpc connections on unix sockets: each container has its own
// guard socket, as the start action gives it.
type testBed struct {
	dir     string
	bundles string
	guard   taskAPI.TTRPCTaskService // a client on the first container's socket
	clients map[string]taskAPI.TTRPCTaskService
	sockets map[string]string
	server  *Server
	fakes   map[string]*fakeTask
	servers map[string]*ttrpc.Server
}

// newTestBed starts one fake delegate per distinct name in containers
// (container id -> delegate name) and a guard serving each container on a
// socket of its own.
func newTestBed(t testing.TB, containers map[string]string, hook CreateHook) *testBed {
	t.Helper()
	tb := &testBed{dir: shortTempDir(t), fakes: map[string]*fakeTask{}, servers: map[string]*ttrpc.Server{},
		clients: map[string]taskAPI.TTRPCTaskService{}, sockets: map[string]string{}}
	tb.bundles = filepath.Join(tb.dir, "k8s.io")
	var err error
	tb.server, err = NewServer(context.Background(), ServerOptions{
		Hook: hook,
		Dial: func(a string) (net.Conn, error) { return net.Dial("unix", a[len("unix://"):]) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.server.Stop(); tb.server.Wait() })
	ids := slices.Sorted(maps.Keys(containers))
	for _, id := range ids {
		name := containers[id]
		if _, ok := tb.fakes[name]; !ok {
			f := &fakeTask{name: name}
			tb.fakes[name] = f
			_, tb.servers[name] = serveFake(t, filepath.Join(tb.dir, name+".sock"), f)
		}
		tb.add(t, id, name)
	}
	tb.guard = tb.clients[ids[0]]
	return tb
}

// delegate is the address of the fake delegate name.
func (tb *testBed) delegate(name string) string {
	return "unix://" + filepath.Join(tb.dir, name+".sock")
}

// add hands the guard container id, served by the fake delegate name.
func (tb *testBed) add(t testing.TB, id, name string) {
	t.Helper()
	b := filepath.Join(tb.bundles, id)
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(tb.dir, "g-"+id+".sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	addr := "unix://" + sock
	if err := tb.server.Add(id, b, "unix://"+filepath.Join(tb.dir, name+".sock"), addr, l); err != nil {
		t.Fatal(err)
	}
	tb.sockets[id] = addr
	tb.clients[id] = dialTask(t, addr)
}

// method is one task API method with a request for a container and the
// answer the fake delegate named "d1" gives for container "c1".
type method struct {
	name string
	req  func(id string) proto.Message
	call func(ctx context.Context, c taskAPI.TTRPCTaskService, req proto.Message) (proto.Message, error)
	want proto.Message
}

func m[Req, Resp proto.Message](name string, req func(id string) Req, call func(taskAPI.TTRPCTaskService, context.Context, Req) (Resp, error), want proto.Message) method {
	return method{
		name: name,
		req:  func(id string) proto.Message { return req(id) },
		call: func(ctx context.Context, c taskAPI.TTRPCTaskService, r proto.Message) (proto.Message, error) {
			return call(c, ctx, r.(Req))
		},
		want: want,
	}
}

// allMethods lists every method of containerd.task.v2.Task but Shutdown,
// which has its own tests.
func allMethods() []method {
	e := &emptypb.Empty{}
	return []method{
		m("State", func(id string) *taskAPI.StateRequest { return &taskAPI.StateRequest{ID: id, ExecID: "e1"} },
			taskAPI.TTRPCTaskService.State, &taskAPI.StateResponse{ID: "c1", Bundle: "d1", Pid: 104, Status: task.Status_RUNNING, ExecID: "e1"}),
		m("Create", func(id string) *taskAPI.CreateTaskRequest {
			return &taskAPI.CreateTaskRequest{ID: id, Terminal: true, Stdout: "/fifo/out",
				Options: &anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: []byte{0x12, 3, 'a', 'b', 'c'}}}
		}, taskAPI.TTRPCTaskService.Create, &taskAPI.CreateTaskResponse{Pid: uint32(os.Getpid())}),
		m("Start", func(id string) *taskAPI.StartRequest { return &taskAPI.StartRequest{ID: id, ExecID: "e1"} },
			taskAPI.TTRPCTaskService.Start, &taskAPI.StartResponse{Pid: 101}),
		m("Delete", func(id string) *taskAPI.DeleteRequest { return &taskAPI.DeleteRequest{ID: id, ExecID: "e2"} },
			taskAPI.TTRPCTaskService.Delete, &taskAPI.DeleteResponse{Pid: 102, ExitStatus: 7}),
		m("Pids", func(id string) *taskAPI.PidsRequest { return &taskAPI.PidsRequest{ID: id} },
			taskAPI.TTRPCTaskService.Pids, &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: 103}}}),
		m("Pause", func(id string) *taskAPI.PauseRequest { return &taskAPI.PauseRequest{ID: id} },
			taskAPI.TTRPCTaskService.Pause, e),
		m("Resume", func(id string) *taskAPI.ResumeRequest { return &taskAPI.ResumeRequest{ID: id} },
			taskAPI.TTRPCTaskService.Resume, e),
		m("Checkpoint", func(id string) *taskAPI.CheckpointTaskRequest {
			return &taskAPI.CheckpointTaskRequest{ID: id, Path: "/ckpt"}
		}, taskAPI.TTRPCTaskService.Checkpoint, e),
		m("Kill", func(id string) *taskAPI.KillRequest { return &taskAPI.KillRequest{ID: id, Signal: 15, All: true} },
			taskAPI.TTRPCTaskService.Kill, e),
		m("Exec", func(id string) *taskAPI.ExecProcessRequest {
			return &taskAPI.ExecProcessRequest{ID: id, ExecID: "e3", Terminal: true, Spec: &anypb.Any{TypeUrl: "spec", Value: []byte("{}")}}
		}, taskAPI.TTRPCTaskService.Exec, e),
		m("ResizePty", func(id string) *taskAPI.ResizePtyRequest {
			return &taskAPI.ResizePtyRequest{ID: id, ExecID: "e3", Width: 80, Height: 24}
		}, taskAPI.TTRPCTaskService.ResizePty, e),
		m("CloseIO", func(id string) *taskAPI.CloseIORequest { return &taskAPI.CloseIORequest{ID: id, Stdin: true} },
			taskAPI.TTRPCTaskService.CloseIO, e),
		m("Update", func(id string) *taskAPI.UpdateTaskRequest {
			return &taskAPI.UpdateTaskRequest{ID: id, Annotations: map[string]string{"k": "v"}}
		}, taskAPI.TTRPCTaskService.Update, e),
		m("Wait", func(id string) *taskAPI.WaitRequest { return &taskAPI.WaitRequest{ID: id} },
			taskAPI.TTRPCTaskService.Wait, &taskAPI.WaitResponse{ExitStatus: 9}),
		m("Stats", func(id string) *taskAPI.StatsRequest { return &taskAPI.StatsRequest{ID: id} },
			taskAPI.TTRPCTaskService.Stats, &taskAPI.StatsResponse{Stats: &anypb.Any{TypeUrl: "fake/d1", Value: []byte{1, 2}}}),
		m("Connect", func(id string) *taskAPI.ConnectRequest { return &taskAPI.ConnectRequest{ID: id} },
			taskAPI.TTRPCTaskService.Connect, &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: 106, Version: "d1"}),
	}
}

func TestForwardEveryMethod(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1", failID: "d1"}, nil)
	for _, mc := range allMethods() {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ttrpc.WithMetadata(context.Background(), ttrpc.MD{"x-trace": {"abc"}})
			req := mc.req("c1")
			got, err := mc.call(ctx, tb.guard, req)
			if err != nil {
				t.Fatalf("%s(c1) through guard: %v", mc.name, err)
			}
			if !proto.Equal(got, mc.want) {
				t.Errorf("%s(c1) = %v, want %v", mc.name, got, mc.want)
			}
			last := tb.fakes["d1"].last()
			if last.method != mc.name || !proto.Equal(last.req, req) {
				t.Errorf("delegate got %s(%v), want %s(%v)", last.method, last.req, mc.name, req)
			}
			if v, _ := last.md.Get("x-trace"); len(v) != 1 || v[0] != "abc" {
				t.Errorf("delegate metadata x-trace = %v, want [abc]", v)
			}
		})
		t.Run(mc.name+"/error", func(t *testing.T) {
			_, err := mc.call(context.Background(), tb.guard, mc.req(failID))
			if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
				t.Fatalf("%s(%s) error = %v, want the delegate's FailedPrecondition", mc.name, failID, err)
			}
			if want := "fake d1 " + mc.name; !strings.Contains(err.Error(), want) {
				t.Errorf("%s(%s) error = %q, want it to carry %q", mc.name, failID, err, want)
			}
		})
	}
}

func TestUnknownContainerIsNotFound(t *testing.T) {
	tb := newTestBed(t, map[string]string{"c1": "d1"}, nil)
	for _, id := range []string{"nope", "../c1", "..", ""} {
		_, err := tb.guard.State(context.Background(), &taskAPI.StateRequest{ID: id})
		if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			t.Errorf("State(%q) error = %v, want NotFound", id, err)
		}
	}
	if n := len(tb.fakes["d1"].calls); n != 0 {
		t.Errorf("delegate got %d calls for unknown containers, want 0", n)
	}
}

// TestGrouping routes several containers of one pod, served by two runsc
// shim processes, through one guard.
func TestGrouping(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app1": "d1", "app2": "d2"}, nil)
	ctx := context.Background()
	for id, want := range map[string]string{"sandbox": "d1", "app1": "d1", "app2": "d2"} {
		got, err := tb.guard.State(ctx, &taskAPI.StateRequest{ID: id})
		if err != nil {
			t.Fatalf("State(%s): %v", id, err)
		}
		if got.Bundle != want {
			t.Errorf("State(%s) served by %q, want %q", id, got.Bundle, want)
		}
	}
	if n := tb.server.Router().Len(); n != 3 {
		t.Errorf("router serves %d containers, want 3", n)
	}
	// One connection per runsc shim, however many containers it serves.
	tb.server.Router().mu.Lock()
	conns := len(tb.server.Router().byAddr)
	tb.server.Router().mu.Unlock()
	if conns != 2 {
		t.Errorf("router holds %d delegate connections, want 2", conns)
	}
}

// TestExitAfterShutdownOfAll: the guard keeps serving while any container
// is left and stops after the last Shutdown.
func TestExitAfterShutdownOfAll(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app": "d2"}, nil)
	ctx := context.Background()
	for _, id := range []string{"sandbox", "app"} {
		if _, err := tb.guard.State(ctx, &taskAPI.StateRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.guard.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "app"}); err != nil {
		t.Fatalf("Shutdown(app): %v", err)
	}
	if tb.fakes["d2"].shutdown != 1 {
		t.Errorf("delegate d2 got %d Shutdown, want 1", tb.fakes["d2"].shutdown)
	}
	if stopped(tb.server, 300*time.Millisecond) {
		t.Fatal("guard stopped while the sandbox container was left")
	}
	if _, err := tb.guard.State(ctx, &taskAPI.StateRequest{ID: "sandbox"}); err != nil {
		t.Fatalf("State(sandbox) after app shutdown: %v", err)
	}
	if _, err := tb.guard.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "sandbox"}); err != nil {
		t.Fatalf("Shutdown(sandbox): %v", err)
	}
	if !stopped(tb.server, 5*time.Second) {
		t.Fatal("guard still serving after its last container shut down")
	}
}

// TestExitWhenDelegatesGone: runsc shims that die take their containers
// with them, and the guard exits when none is left.
func TestExitWhenDelegatesGone(t *testing.T) {
	tb := newTestBed(t, map[string]string{"sandbox": "d1", "app": "d2"}, nil)
	ctx := context.Background()
	for _, id := range []string{"sandbox", "app"} {
		if _, err := tb.guard.State(ctx, &taskAPI.StateRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	tb.servers["d2"].Close()
	waitFor(t, func() bool { return tb.server.Router().Len() == 1 }, "app to be dropped with its delegate")
	if stopped(tb.server, 200*time.Millisecond) {
		t.Fatal("guard stopped while d1 was alive")
	}
	tb.servers["d1"].Close()
	if !stopped(tb.server, 5*time.Second) {
		t.Fatal("guard still serving after all delegates exited")
	}
}

// TestIdleExit: a guard that is never handed a container does not stay
// forever.
func TestIdleExit(t *testing.T) {
	s, err := NewServer(context.Background(), ServerOptions{Idle: 200 * time.Millisecond, Grace: time.Millisecond,
		Dial: func(a string) (net.Conn, error) { return nil, errors.New("no dial") }})
	if err != nil {
		t.Fatal(err)
	}
	if !stopped(s, 5*time.Second) {
		t.Fatal("idle guard did not stop")
	}
}

func stopped(s *Server, within time.Duration) bool {
	select {
	case err := <-s.done:
		s.done <- err // keep it for Wait in cleanup
		return true
	case <-time.After(within):
		return false
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseStartReply(t *testing.T) {
	pb := func(r *bootapi.BootstrapResult) string {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, in, want string
		format         ReplyFormat
		wantErr        bool
	}{
		{"plain", "unix:///run/containerd/s/abc", "unix:///run/containerd/s/abc", ReplyPlain, false},
		{"plain newline", "unix:///run/containerd/s/abc\n", "unix:///run/containerd/s/abc", ReplyPlain, false},
		{"json v2", `{"version":2,"address":"unix:///run/containerd/s/abc","protocol":"ttrpc"}`, "unix:///run/containerd/s/abc", ReplyJSON, false},
		{"json no version", `{"address":"unix:///s/x"}`, "unix:///s/x", ReplyJSON, false},
		{"json grpc", `{"version":2,"address":"unix:///s/x","protocol":"grpc"}`, "", "", true},
		{"json v3", `{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}`, "", "", true},
		{"json broken", `{"version":2,"address":`, "", "", true},
		{"protobuf", pb(&bootapi.BootstrapResult{Version: 2, Address: "unix:///run/containerd/s/abc", Protocol: "ttrpc"}), "unix:///run/containerd/s/abc", ReplyProto, false},
		{"protobuf no version", pb(&bootapi.BootstrapResult{Address: "unix:///s/x"}), "unix:///s/x", ReplyProto, false},
		{"protobuf grpc", pb(&bootapi.BootstrapResult{Version: 2, Address: "unix:///s/x", Protocol: "grpc"}), "", "", true},
		{"protobuf v3", pb(&bootapi.BootstrapResult{Version: 3, Address: "unix:///s/x", Protocol: "ttrpc"}), "", "", true},
		{"protobuf vsock", pb(&bootapi.BootstrapResult{Version: 2, Address: "vsock://3:1024", Protocol: "ttrpc"}), "", "", true},
		{"empty", "", "", "", true},
		{"not unix", "tcp://1.2.3.4:5", "", "", true},
		{"bare prefix", "unix://", "", "", true},
		{"stderr noise", "unix:///s/x\nWARN something", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStartReply([]byte(tc.in))
			if (err != nil) != tc.wantErr || got.Address != tc.want || got.Format != tc.format {
				t.Errorf("ParseStartReply(%q) = %+v, %v; want %q (%s), error %v", tc.in, got, err, tc.want, tc.format, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadStartReply) {
				t.Errorf("ParseStartReply(%q) error %v is not ErrBadStartReply", tc.in, err)
			}
		})
	}
}

// BenchmarkTaskCall compares a State call made to the runsc shim directly
// with the same call through the guard.
func BenchmarkTaskCall(b *testing.B) {
	tb := newTestBed(b, map[string]string{"c1": "d1"}, nil)
	direct := dialTask(b, "unix://"+filepath.Join(tb.dir, "d1.sock"))
	ctx := context.Background()
	req := &taskAPI.StateRequest{ID: "c1"}
	for _, bc := range []struct {
		name string
		c    taskAPI.TTRPCTaskService
	}{{"direct", direct}, {"guard", tb.guard}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.c.State(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
