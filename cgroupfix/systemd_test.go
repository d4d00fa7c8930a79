package cgroupfix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"github.com/google/go-cmp/cmp"
)

// fakeSystemd records calls and answers like systemd would.
type fakeSystemd struct {
	calls    []string
	props    []dbus.Property
	mode     string
	resetErr error
	startErr error
	// startErrOnce fails the first start only.
	startErrOnce error
	// result is sent on the job channel; "" sends nothing (a hung job).
	result string
	// delay postpones the result; sent is closed once it was delivered.
	delay time.Duration
	sent  chan struct{}
}

func (f *fakeSystemd) ResetFailedUnitContext(ctx context.Context, name string) error {
	f.calls = append(f.calls, "reset-failed "+name)
	return f.resetErr
}

func (f *fakeSystemd) SetUnitPropertiesContext(ctx context.Context, name string, runtime bool, props ...dbus.Property) error {
	f.calls = append(f.calls, fmt.Sprintf("set-properties %s runtime=%v", name, runtime))
	f.props = props
	return f.startErr
}

func (f *fakeSystemd) StartTransientUnitContext(ctx context.Context, name, mode string, props []dbus.Property, ch chan<- string) (int, error) {
	f.calls = append(f.calls, "start "+name)
	f.mode, f.props = mode, props
	if f.startErr != nil {
		return 0, f.startErr
	}
	if f.startErrOnce != nil {
		err := f.startErrOnce
		f.startErrOnce = nil
		return 0, err
	}
	if f.result != "" {
		// Like go-systemd: deliver from another goroutine, and block if
		// the channel is unbuffered and nobody reads.
		go func() {
			time.Sleep(f.delay)
			ch <- f.result
			if f.sent != nil {
				close(f.sent)
			}
		}()
	}
	return 1, nil
}

func propMap(props []dbus.Property) map[string]any {
	m := map[string]any{}
	for _, p := range props {
		m[p.Name] = p.Value.Value()
	}
	return m
}

// TestMoveToScopeLateResult: go-systemd sends the job result while holding
// its listener lock, so a result arriving after MoveToScope gave up must
// not block the sender.
func TestMoveToScopeLateResult(t *testing.T) {
	f := &fakeSystemd{result: "done", delay: 50 * time.Millisecond, sent: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	err := MoveToScope(ctx, f, ScopeName(sandbox), "kubepods.slice", []int{1}, 0)
	if !errors.Is(err, ErrScopeTimeout) {
		t.Fatalf("MoveToScope error = %v, want %v", err, ErrScopeTimeout)
	}
	select {
	case <-f.sent:
	case <-time.After(5 * time.Second):
		t.Fatal("job result sender blocked after MoveToScope returned")
	}
}

func TestScopeName(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name, id, want string
	}{
		{"container id", sandbox, "runsc-guard-" + sandbox + ".scope"},
		{"short", "abc", "runsc-guard-abc.scope"},
		{"slash", "a/b", ""},
		{"backslash", `a\b`, ""},
		{"empty", "", ""},
		{"too long", long, ""},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ScopeName(tt.id)
			if tt.want != "" && got != tt.want {
				t.Errorf("ScopeName(%q) = %q, want %q", tt.id, got, tt.want)
			}
			if !strings.HasPrefix(got, "runsc-guard-") || !strings.HasSuffix(got, ".scope") || strings.Contains(got, `\`) {
				t.Errorf("ScopeName(%q) = %q, want runsc-guard-*.scope without escapes", tt.id, got)
			}
			if err := validUnitName(got); err != nil {
				t.Errorf("ScopeName(%q) = %q: %v", tt.id, got, err)
			}
			if other, dup := seen[got]; dup {
				t.Errorf("ScopeName(%q) = ScopeName(%q) = %q", tt.id, other, got)
			}
			seen[got] = tt.id
		})
	}
	// Sanitising must not make distinct ids collide.
	if a, b := ScopeName("a/b"), ScopeName("a_b"); a == b {
		t.Errorf("ScopeName(%q) = ScopeName(%q) = %q", "a/b", "a_b", a)
	}
	if a, b := ScopeName(long+"x"), ScopeName(long+"y"); a == b {
		t.Errorf("ScopeName of two long ids = %q for both", a)
	}
}

func TestScopeProperties(t *testing.T) {
	slice := "kubepods-burstable-" + podUID + ".slice"
	got := propMap(ScopeProperties(slice, []int{4242, 0, -1, 4243}, mib256))
	want := map[string]any{
		"Description":      got["Description"],
		"Slice":            slice,
		"PIDs":             []uint32{4242, 4243},
		"Delegate":         true,
		"MemoryAccounting": true,
		"MemoryMax":        uint64(mib256),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ScopeProperties(%q, ...) mismatch (-want +got):\n%s", slice, diff)
	}
	if d, _ := got["Description"].(string); !strings.Contains(d, "runsc-guard") {
		t.Errorf("ScopeProperties Description = %q, want it to name runsc-guard", d)
	}
	unlimited := propMap(ScopeProperties(slice, []int{1}, 0))
	if _, ok := unlimited["MemoryMax"]; ok {
		t.Errorf("ScopeProperties(memoryMax=0) sets MemoryMax = %v, want none", unlimited["MemoryMax"])
	}
}

func TestMoveToScope(t *testing.T) {
	unit := ScopeName(sandbox)
	slice := "kubepods-burstable-" + podUID + ".slice"
	pids := []int{4242, 4243, 4250}
	tests := []struct {
		name      string
		fake      fakeSystemd
		unit      string
		slice     string
		pids      []int
		timeout   time.Duration
		wantErr   error  // checked with errors.Is
		wantInErr string // substring of the error
		wantCalls []string
	}{
		{
			name: "done", fake: fakeSystemd{result: "done"},
			wantCalls: []string{"reset-failed " + unit, "start " + unit},
		},
		{
			name:      "first move: reset-failed says NoSuchUnit",
			fake:      fakeSystemd{result: "done", resetErr: godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit"}},
			wantCalls: []string{"reset-failed " + unit, "start " + unit},
		},
		{
			// The unit is reset after the failure, so a next try is not
			// refused by its "failed" state.
			name: "job failed", fake: fakeSystemd{result: "failed"},
			wantErr: ErrScopeJobFailed, wantInErr: `job result "failed"`,
			wantCalls: []string{"reset-failed " + unit, "start " + unit, "reset-failed " + unit},
		},
		{
			name: "job never completes", fake: fakeSystemd{}, timeout: 50 * time.Millisecond,
			wantErr: ErrScopeTimeout, wantInErr: unit,
			wantCalls: []string{"reset-failed " + unit, "start " + unit, "reset-failed " + unit},
		},
		{
			name:      "start refused, reset error reported",
			fake:      fakeSystemd{startErr: errors.New("Unit " + unit + " already exists."), resetErr: errors.New("access denied")},
			wantInErr: "already exists",
			wantCalls: []string{"reset-failed " + unit, "start " + unit},
		},
		{name: "no pids", fake: fakeSystemd{result: "done"}, pids: []int{}, wantErr: ErrInvalidArgument},
		{name: "bad pid", fake: fakeSystemd{result: "done"}, pids: []int{1, 0}, wantErr: ErrInvalidArgument},
		{name: "not a scope", fake: fakeSystemd{result: "done"}, unit: "x.service", wantErr: ErrInvalidArgument},
		{name: "bad unit chars", fake: fakeSystemd{result: "done"}, unit: "a/b.scope", wantErr: ErrInvalidArgument},
		{name: "bad slice", fake: fakeSystemd{result: "done"}, slice: "kubepods--x.slice", wantErr: ErrInvalidSlice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, s, p := unit, slice, pids
			if tt.unit != "" {
				u = tt.unit
			}
			if tt.slice != "" {
				s = tt.slice
			}
			if tt.pids != nil {
				p = tt.pids
			}
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			f := tt.fake
			err := MoveToScope(ctx, &f, u, s, p, mib256)
			switch {
			case tt.wantErr == nil && tt.wantInErr == "":
				if err != nil {
					t.Fatalf("MoveToScope(%q) error = %v, want nil", u, err)
				}
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("MoveToScope(%q) error = %v, want %v", u, err, tt.wantErr)
			case err == nil || !strings.Contains(err.Error(), tt.wantInErr):
				t.Fatalf("MoveToScope(%q) error = %v, want one containing %q", u, err, tt.wantInErr)
			}
			if diff := cmp.Diff(tt.wantCalls, f.calls); diff != "" {
				t.Errorf("MoveToScope(%q) calls mismatch (-want +got):\n%s", u, diff)
			}
			if len(f.calls) == 2 {
				if f.mode != "fail" {
					t.Errorf("MoveToScope(%q) start mode = %q, want %q", u, f.mode, "fail")
				}
				pm := propMap(f.props)
				if pm["Slice"] != s || !cmp.Equal(pm["PIDs"], []uint32{4242, 4243, 4250}) || pm["MemoryMax"] != uint64(mib256) {
					t.Errorf("MoveToScope(%q) properties = %v, want slice %q, all pids, MemoryMax %d", u, pm, s, mib256)
				}
			}
			if strings.Contains(tt.name, "reset error") && !strings.Contains(err.Error(), "access denied") {
				t.Errorf("MoveToScope(%q) error = %v, want it to mention the reset-failed error", u, err)
			}
		})
	}
}

// TestMoveToScopeGonePID: a helper that exits between the listing and the
// move makes systemd refuse the unit; the move goes on with the living.
func TestMoveToScopeGonePID(t *testing.T) {
	const gone = 1<<22 - 1 // above any pid_max a test machine uses
	if syscall.Kill(gone, 0) == nil {
		t.Skip("pid", gone, "exists")
	}
	self := os.Getpid()
	f := &fakeSystemd{result: "done", startErrOnce: godbus.Error{Name: "org.freedesktop.systemd1.NoSuchProcess", Body: []any{"Process with ID 4194303 does not exist."}}}
	unit := ScopeName(sandbox)
	if err := MoveToScope(context.Background(), f, unit, "kubepods.slice", []int{self, gone}, 0); err != nil {
		t.Fatalf("MoveToScope with a gone pid: %v", err)
	}
	if want := []string{"reset-failed " + unit, "start " + unit, "start " + unit}; !cmp.Equal(f.calls, want) {
		t.Errorf("calls %v, want %v", f.calls, want)
	}
	if pm := propMap(f.props); !cmp.Equal(pm["PIDs"], []uint32{uint32(self)}) {
		t.Errorf("second start moved %v, want only the living pid %d", pm["PIDs"], self)
	}
}

func TestRetriable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{godbus.ErrClosed, true},
		{errors.New("write unix @->/run/dbus/system_bus_socket: broken pipe"), true},
		{godbus.Error{Name: "org.freedesktop.systemd1.UnitExists"}, false},
		{ErrScopeJobFailed, false},
		{ErrScopeTimeout, false},
		{ErrInvalidArgument, false},
		{context.DeadlineExceeded, false},
		{nil, false},
	} {
		if got := Retriable(tc.err); got != tc.want {
			t.Errorf("Retriable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
