package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// The test binary plays three programs, picked by this variable: the guard
// itself (as containerd runs it), and a stand-in runsc shim.
const roleEnv = "RUNSC_GUARD_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "guard":
		os.Exit(Run(os.Args[1:], "test", nil))
	case "fake-shim":
		os.Exit(fakeShimMain(os.Args[1:]))
	}
	log.L.Logger.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// fakeShimMain is a stand-in runsc shim binary: start daemonizes a task
// server (a fakeTask) and prints its address, plain or as JSON like the
// 2026 runsc shim; delete prints a DeleteResponse.
func fakeShimMain(args []string) int {
	f, err := ParseFlags(args)
	if err != nil {
		fmt.Fprint(os.Stderr, err)
		return 2
	}
	bundle, _ := os.Getwd()
	switch f.Action {
	case "start":
		in, _ := io.ReadAll(os.Stdin)
		_ = os.WriteFile(filepath.Join(bundle, "fake-stdin"), in, 0o600)
		_ = os.WriteFile(filepath.Join(bundle, "fake-args"), []byte(strings.Join(args, " ")), 0o600)
		sock := filepath.Join(os.Getenv("RUNSC_GUARD_SOCKET_DIR"), "fake-"+f.ID)
		l, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Fprint(os.Stderr, err)
			return 1
		}
		lf, _ := l.(*net.UnixListener).File()
		cmd := exec.Command("/proc/self/exe", append(args[:len(args)-1:len(args)-1], "fake-serve")...)
		cmd.ExtraFiles = []*os.File{lf}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprint(os.Stderr, err)
			return 1
		}
		_ = os.WriteFile(filepath.Join(bundle, "shim.pid"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o600)
		addr := "unix://" + sock
		// The real shims write their own address file; the guard must
		// replace it.
		_ = os.WriteFile(filepath.Join(bundle, "address"), []byte(addr), 0o600)
		switch os.Getenv("FAKE_REPLY") {
		case "json":
			b, _ := json.Marshal(map[string]any{"version": 2, "address": addr, "protocol": "ttrpc"})
			os.Stdout.Write(b)
		case "protobuf":
			b, _ := proto.Marshal(&bootapi.BootstrapResult{Version: 2, Address: addr, Protocol: "ttrpc"})
			os.Stdout.Write(b)
		default:
			fmt.Print(addr)
		}
		return 0
	case "fake-serve":
		l, err := net.FileListener(os.NewFile(3, "socket"))
		if err != nil {
			return 1
		}
		s, _ := ttrpc.NewServer()
		done := make(chan struct{})
		ft := &fakeTask{name: "fake-" + f.ID + "@" + bundle, onShut: func() { close(done) }}
		taskAPI.RegisterTTRPCTaskService(s, ft)
		go s.Serve(context.Background(), l)
		select {
		case <-done:
			time.Sleep(50 * time.Millisecond)
		case <-time.After(time.Minute):
		}
		os.Remove(strings.TrimPrefix(l.Addr().String(), "unix://"))
		// As containerd's shim library does when a shim exits: remove the
		// socket that <bundle>/address names.
		if b, err := os.ReadFile("address"); err == nil {
			os.Remove(strings.TrimPrefix(string(b), "unix://"))
		}
		return 0
	case "delete":
		if os.Getenv("FAKE_DELETE_FAIL") != "" {
			fmt.Fprint(os.Stderr, "fake delete failed")
			return 3
		}
		b, _ := proto.Marshal(&taskAPI.DeleteResponse{Pid: 4242, ExitStatus: 137})
		os.Stdout.Write(b)
		return 0
	}
	return 2
}

// shimEnv is a node for the process tests: a namespace of bundles, a
// socket dir, the guard config naming the fake runsc shim.
type shimEnv struct {
	dir, sockets, bundles string
	env                   []string
}

func newShimEnv(t *testing.T, reply string) *shimEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("process test (runs the guard and fake runsc shims as processes): not with -short")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := &shimEnv{dir: shortTempDir(t)}
	e.sockets = filepath.Join(e.dir, "s")
	e.bundles = filepath.Join(e.dir, "k8s.io")
	for _, d := range []string{e.sockets, e.bundles} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fake := filepath.Join(e.dir, "containerd-shim-runsc-v1")
	script := fmt.Sprintf("#!/bin/sh\n%s=fake-shim exec %s \"$@\"\n", roleEnv, self)
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.dir, "runsc-guard.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("shim_path = %q\n", fake)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.env = append(os.Environ(), roleEnv+"=guard", config.Env+"="+cfg,
		"RUNSC_GUARD_SOCKET_DIR="+e.sockets, "FAKE_REPLY="+reply)
	t.Cleanup(func() { e.killLeftovers(t) })
	return e
}

// bundle makes a bundle whose spec carries the given annotations.
func (e *shimEnv) bundle(t *testing.T, id string, ann map[string]string) string {
	t.Helper()
	b := filepath.Join(e.bundles, id)
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"ociVersion": "1.0.2", "annotations": ann})
	if err := os.WriteFile(filepath.Join(b, "config.json"), spec, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs the guard binary as containerd does: cwd = bundle, stdout and
// stderr combined.
func (e *shimEnv) run(t *testing.T, bundle string, stdin []byte, args ...string) ([]byte, []byte, int) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	cmd.Env = e.env
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errb.Bytes(), code
}

// procsMentioning lists processes whose command line contains s.
func procsMentioning(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		var pid int
		if _, err := fmt.Sscan(d.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (e *shimEnv) killLeftovers(t *testing.T) {
	for _, pid := range procsMentioning(e.dir) {
		t.Errorf("process %d left behind", pid)
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

func (e *shimEnv) containerd() string { return filepath.Join(e.dir, "containerd.sock") }

func (e *shimEnv) startArgs(id string) []string {
	return []string{"-namespace", "k8s.io", "-address", e.containerd(),
		"-publish-binary", "/bin/true", "-id", id, "start"}
}

// TestStartServeDelete drives the guard binary through a pod's life as
// containerd does, in front of a stand-in runsc shim answering each start
// reply format.
func TestStartServeDelete(t *testing.T) {
	for _, reply := range []string{"plain", "json", "protobuf"} {
		t.Run(reply, func(t *testing.T) {
			e := newShimEnv(t, reply)
			sb := e.bundle(t, "sb1", podAnnotations("sandbox"))
			app := e.bundle(t, "app1", podAnnotations("container"))

			logs := collectLog(t, sb) // as containerd reads shim logs

			opts := []byte("\x0a\x05hello") // stands for the runtime options Any
			addr := e.start(t, sb, "sb1", opts)
			if b, _ := os.ReadFile(filepath.Join(sb, "fake-stdin")); !bytes.Equal(b, opts) {
				t.Errorf("runsc shim got stdin %q, want %q", b, opts)
			}
			if b, _ := os.ReadFile(filepath.Join(sb, "fake-args")); string(b) != strings.Join(e.startArgs("sb1"), " ") {
				t.Errorf("runsc shim got args %q, want %q", b, strings.Join(e.startArgs("sb1"), " "))
			}
			appAddr := e.start(t, app, "app1", nil)
			if appAddr == addr {
				t.Errorf("app1 got the sandbox's socket %q: each container needs its own", addr)
			}
			if n := len(mentioning(procsMentioning("\x00serve"), e.dir)); n != 1 {
				t.Errorf("%d guard servers for one pod, want 1", n)
			}

			ctx := context.Background()
			clients := map[string]taskAPI.TTRPCTaskService{"sb1": dialTask(t, addr), "app1": dialTask(t, appAddr)}
			for id, bundle := range map[string]string{"sb1": sb, "app1": app} {
				c := clients[id]
				if _, err := c.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle}); err != nil {
					t.Fatalf("Create(%s): %v", id, err)
				}
				st, err := c.State(ctx, &taskAPI.StateRequest{ID: id})
				if err != nil {
					t.Fatalf("State(%s): %v", id, err)
				}
				if want := "fake-" + id + "@" + bundle; st.Bundle != want {
					t.Errorf("State(%s) answered by %q, want %q", id, st.Bundle, want)
				}
			}

			// The app container goes; its runsc shim, exiting, removes the
			// socket its bundle's address file names (containerd's shim
			// library does). The sandbox must stay reachable on a new
			// connection, as containerd makes after a restart.
			if _, err := clients["app1"].Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "app1"}); err != nil {
				t.Fatalf("Shutdown(app1): %v", err)
			}
			pid, err := delegatePID(app, "app1")
			if err != nil {
				t.Fatalf("app1's runsc shim: %v", err)
			}
			waitFor(t, func() bool { return unix.Kill(pid, 0) != nil || isZombie(pid) }, "app1's runsc shim to exit")
			again := dialTask(t, addr)
			if _, err := again.State(ctx, &taskAPI.StateRequest{ID: "sb1"}); err != nil {
				t.Errorf("State(sb1) on a new connection after app1 went: %v", err)
			}
			// A new container of the pod goes to the same guard.
			app2 := e.bundle(t, "app2", podAnnotations("container"))
			app2Addr := e.start(t, app2, "app2", nil)
			if n := len(mentioning(procsMentioning("\x00serve"), e.dir)); n != 1 {
				t.Errorf("%d guard servers after app2 started, want 1", n)
			}

			// delete passes the runsc shim's DeleteResponse through.
			dout, derr, code := e.run(t, app, nil, "-namespace", "k8s.io", "-address", e.containerd(), "-id", "app1", "-bundle", app, "delete")
			var dr taskAPI.DeleteResponse
			if code != 0 || proto.Unmarshal(dout, &dr) != nil || dr.Pid != 4242 || dr.ExitStatus != 137 {
				t.Errorf("delete: exit %d, stdout %q (%v), stderr %q; want the runsc shim's response", code, dout, &dr, derr)
			}

			for id, a := range map[string]string{"app2": app2Addr, "sb1": addr} {
				if _, err := dialTask(t, a).Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id}); err != nil {
					t.Fatalf("Shutdown(%s): %v", id, err)
				}
			}
			e.expectNothingLeft(t)
			got := logs()
			for _, want := range []string{"runsc shim started behind runsc-guard", "guard server serving", "guard serving container", "guard server exited"} {
				if !strings.Contains(got, want) {
					t.Errorf("containerd's log fifo lacks %q; got:\n%s", want, got)
				}
			}
			if strings.Contains(got, "level=error") {
				t.Errorf("the guard logged an error in a normal pod life:\n%s", got)
			}
		})
	}
}

// TestGuardKilled: after kill -9 of the guard, containerd runs delete for
// each container; nothing of the pod may be left, as with the stock shim.
func TestGuardKilled(t *testing.T) {
	e := newShimEnv(t, "plain")
	sb := e.bundle(t, "sb1", podAnnotations("sandbox"))
	app := e.bundle(t, "app1", podAnnotations("container"))
	addr := e.start(t, sb, "sb1", nil)
	appAddr := e.start(t, app, "app1", nil)
	c := dialTask(t, addr)
	if _, err := c.State(context.Background(), &taskAPI.StateRequest{ID: "sb1"}); err != nil {
		t.Fatal(err)
	}
	guards := mentioning(procsMentioning("\x00serve"), e.dir)
	if len(guards) != 1 {
		t.Fatalf("guard servers %v, want 1", guards)
	}
	if err := unix.Kill(guards[0], unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := c.State(context.Background(), &taskAPI.StateRequest{ID: "sb1"})
		return err != nil
	}, "containerd's connection to close")
	for id, b := range map[string]string{"sb1": sb, "app1": app} {
		_, derr, code := e.run(t, b, nil, "-namespace", "k8s.io", "-address", e.containerd(), "-id", id, "-bundle", b, "delete")
		if code != 0 {
			t.Errorf("delete %s: exit %d, stderr %q", id, code, derr)
		}
	}
	for _, a := range []string{addr, appAddr} {
		if _, err := os.Stat(strings.TrimPrefix(a, "unix://")); err == nil {
			t.Errorf("socket %s left after delete", a)
		}
	}
	e.expectNothingLeft(t)
}

// TestStartAfterLastShutdown: a container started while the pod's guard
// is exiting after its last Shutdown is never lost: it is served by that
// guard, or by a new one.
func TestStartAfterLastShutdown(t *testing.T) {
	e := newShimEnv(t, "plain")
	ctx := context.Background()
	for i, delay := range []time.Duration{0, 100 * time.Millisecond, 250 * time.Millisecond, 290 * time.Millisecond, 320 * time.Millisecond, 400 * time.Millisecond} {
		sbID, appID := fmt.Sprintf("sb%d", i), fmt.Sprintf("app%d", i)
		sb := e.bundle(t, sbID, map[string]string{cri.ContainerType: "sandbox", cri.SandboxID: "pod"})
		app := e.bundle(t, appID, map[string]string{cri.ContainerType: "container", cri.SandboxID: "pod"})
		addr := e.start(t, sb, sbID, nil)
		if _, err := dialTask(t, addr).Shutdown(ctx, &taskAPI.ShutdownRequest{ID: sbID}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		appAddr := e.start(t, app, appID, nil)
		c := dialTask(t, appAddr)
		time.Sleep(lastReplyGrace + 200*time.Millisecond) // past any exit of the old guard
		if _, err := c.Create(ctx, &taskAPI.CreateTaskRequest{ID: appID, Bundle: app}); err != nil {
			t.Errorf("start %v after the last Shutdown: Create(%s): %v", delay, appID, err)
			continue
		}
		if _, err := c.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: appID}); err != nil {
			t.Errorf("Shutdown(%s): %v", appID, err)
		}
	}
	e.expectNothingLeft(t)
}

func podAnnotations(kind string) map[string]string {
	return map[string]string{cri.ContainerType: kind, cri.SandboxID: "sb1"}
}

// start runs the start action for container id and returns the address
// it printed, checking it is a plain unix:// address that the bundle's
// address file names.
func (e *shimEnv) start(t *testing.T, bundle, id string, stdin []byte) string {
	t.Helper()
	out, errb, code := e.run(t, bundle, stdin, e.startArgs(id)...)
	if code != 0 || len(errb) != 0 {
		t.Fatalf("start %s: exit %d, stdout %q, stderr %q", id, code, out, errb)
	}
	addr := string(out)
	if !strings.HasPrefix(addr, "unix://"+e.sockets) || strings.ContainsAny(addr, "{\n") {
		t.Fatalf("start %s printed %q, want a plain unix:// address in %s", id, addr, e.sockets)
	}
	if b, _ := os.ReadFile(filepath.Join(bundle, "address")); string(b) != addr {
		t.Errorf("%s/address = %q, want the guard %q", id, b, addr)
	}
	return addr
}

// expectNothingLeft: no process of this node's and no socket is left.
func (e *shimEnv) expectNothingLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(procsMentioning(e.dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := procsMentioning(e.dir); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
	socks, _ := os.ReadDir(e.sockets)
	for _, s := range socks {
		t.Errorf("socket %s left in %s", s.Name(), e.sockets)
	}
}

// collectLog opens the bundle's "log" fifo for reading as containerd does
// before it starts a shim, and returns a func giving what was written.
func collectLog(t *testing.T, bundle string) func() string {
	t.Helper()
	// containerd opens it read-write, so the reader sees no EOF between
	// the start process and the server.
	r, err := fifo.OpenFifo(context.Background(), filepath.Join(bundle, "log"), unix.O_RDWR|unix.O_CREAT|unix.O_NONBLOCK, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&buf, r); close(done) }()
	return func() string {
		r.Close()
		<-done
		return buf.String()
	}
}

// mentioning keeps the pids whose command line contains s (this test's
// directory: another test run on the host has guards of its own).
func mentioning(pids []int, s string) []int {
	var out []int
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(b, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

func TestDeleteFailurePassesThrough(t *testing.T) {
	e := newShimEnv(t, "plain")
	b := e.bundle(t, "c1", nil)
	e.env = append(e.env, "FAKE_DELETE_FAIL=1")
	_, errb, code := e.run(t, b, nil, "-namespace", "k8s.io", "-id", "c1", "-bundle", b, "delete")
	if code != 3 || !strings.Contains(string(errb), "fake delete failed") {
		t.Errorf("delete = exit %d, stderr %q; want the runsc shim's exit 3 and message", code, errb)
	}
}

func TestStartFailures(t *testing.T) {
	t.Run("runsc shim missing", func(t *testing.T) {
		e := newShimEnv(t, "plain")
		cfg := filepath.Join(e.dir, "bad.toml")
		os.WriteFile(cfg, []byte(`shim_path = "/nonexistent/containerd-shim-runsc-v1"`), 0o644)
		e.env = append(e.env, config.Env+"="+cfg)
		b := e.bundle(t, "c1", nil)
		out, errb, code := e.run(t, b, nil, e.startArgs("c1")...)
		if code == 0 || len(out) != 0 || !strings.Contains(string(errb), "/nonexistent/containerd-shim-runsc-v1") {
			t.Errorf("start = exit %d, stdout %q, stderr %q; want failure naming the missing shim", code, out, errb)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		e := newShimEnv(t, "plain")
		cfg := filepath.Join(e.dir, "bad.toml")
		os.WriteFile(cfg, []byte("policy = \"lenient\"\n"), 0o644)
		e.env = append(e.env, config.Env+"="+cfg)
		b := e.bundle(t, "c1", nil)
		_, errb, code := e.run(t, b, nil, e.startArgs("c1")...)
		if code == 0 || !strings.Contains(string(errb), "lenient") {
			t.Errorf("start = exit %d, stderr %q; want the bad policy named", code, errb)
		}
	})
	t.Run("garbage reply", func(t *testing.T) {
		e := newShimEnv(t, "plain")
		fake := filepath.Join(e.dir, "containerd-shim-runsc-v1")
		os.WriteFile(fake, []byte("#!/bin/sh\necho 'not an address'\n"), 0o755)
		b := e.bundle(t, "c1", nil)
		_, errb, code := e.run(t, b, nil, e.startArgs("c1")...)
		if code == 0 || !strings.Contains(string(errb), "not an address") {
			t.Errorf("start = exit %d, stderr %q; want the bad reply named", code, errb)
		}
	})
}

func TestVersion(t *testing.T) {
	e := newShimEnv(t, "plain")
	out, _, code := e.run(t, e.dir, nil, "-v")
	if code != 0 || !strings.Contains(string(out), "Version:  test") {
		t.Errorf("-v = exit %d, %q; want the stamped version", code, out)
	}
}
