package cgroupfix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Systemd is the part of systemd's D-Bus API the guard uses.
// *github.com/coreos/go-systemd/v22/dbus.Conn satisfies it.
type Systemd interface {
	StartTransientUnitContext(ctx context.Context, name, mode string, properties []dbus.Property, ch chan<- string) (int, error)
	ResetFailedUnitContext(ctx context.Context, name string) error
	SetUnitPropertiesContext(ctx context.Context, name string, runtime bool, properties ...dbus.Property) error
}

var _ Systemd = (*dbus.Conn)(nil)

// scopeNamePrefix starts every unit the guard creates.
const scopeNamePrefix = "runsc-guard-"

// DefaultScopeTimeout bounds MoveToScope's wait for the job result when
// the caller's context has no deadline.
const DefaultScopeTimeout = 30 * time.Second

// ScopeName returns the transient scope unit the guard moves a sandbox
// into, "runsc-guard-<containerID>.scope". A container id that is not made
// of characters systemd allows, or that would make the name too long, is
// replaced by a shortened, sanitised form plus a hash of the original,
// so the name stays valid and distinct ids stay distinct.
func ScopeName(containerID string) string {
	const maxID = maxUnitName - len(scopeNamePrefix) - len(scopeSuffix)
	clean := true
	for i := 0; i < len(containerID); i++ {
		// '\\' is legal in unit names but only as an escape; keep it out.
		if !unitChar(containerID[i]) || containerID[i] == '\\' {
			clean = false
			break
		}
	}
	if clean && containerID != "" && len(containerID) <= maxID {
		return scopeNamePrefix + containerID + scopeSuffix
	}
	sum := sha256.Sum256([]byte(containerID))
	h := hex.EncodeToString(sum[:8])
	var b strings.Builder
	for i := 0; i < len(containerID) && b.Len() < maxID-len(h)-1; i++ {
		c := containerID[i]
		if !unitChar(c) || c == '\\' {
			c = '_'
		}
		b.WriteByte(c)
	}
	b.WriteByte('-')
	b.WriteString(h)
	return scopeNamePrefix + b.String() + scopeSuffix
}

// ScopeProperties builds the properties of the transient scope: its
// parent Slice (a slice unit name such as
// "kubepods-burstable-pod<uid>.slice"), the PIDs to move in, Delegate=true
// (runsc manages the cgroup below, as it asks for its own scopes), a
// MemoryMax when memoryMax > 0, and a Description. Non-positive pids are
// dropped.
func ScopeProperties(slice string, pids []int, memoryMax uint64) []dbus.Property {
	return scopeProperties(moveDescription, slice, pids, memoryMax)
}

// The Description of the guard's scopes: one a move made, one made before
// runsc's Create for runsc to create the sandbox's cgroups in.
const (
	moveDescription    = "runsc-guard: gVisor sandbox processes moved into their pod's slice"
	prepareDescription = "runsc-guard: gVisor sandbox of the pod, delegated to runsc"
)

func scopeProperties(description, slice string, pids []int, memoryMax uint64) []dbus.Property {
	up := make([]uint32, 0, len(pids))
	for _, p := range pids {
		if p > 0 && p <= int(^uint32(0)>>1) {
			up = append(up, uint32(p))
		}
	}
	props := []dbus.Property{
		dbus.PropDescription(description),
		dbus.PropSlice(slice),
		dbus.PropPids(up...),
		{Name: "Delegate", Value: godbus.MakeVariant(true)},
	}
	if memoryMax > 0 {
		props = append(props,
			dbus.Property{Name: "MemoryAccounting", Value: godbus.MakeVariant(true)},
			dbus.Property{Name: "MemoryMax", Value: godbus.MakeVariant(memoryMax)},
		)
	}
	return props
}

// dbusNoSuchUnit is the D-Bus error systemd returns from ResetFailedUnit
// for a unit it does not know: the normal case for a first move.
const dbusNoSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"

// MoveToScope moves pids into a new transient scope unit under slice with
// the pod's memory limit, and waits for systemd to report the job done.
//
// It first resets a failed unit of the same name: an OOM-killed transient
// scope stays in state "failed" and blocks a new one with its name
// (docs/upstream.md#move). The start uses mode "fail", so an existing active
// unit is an error rather than replaced. Without a deadline on ctx it waits
// at most DefaultScopeTimeout.
//
// A move is a fallback: it cannot change the --total-memory runsc already
// booted with, and charges made before it stay behind (cgroup v2 does not
// migrate them). Move every pid of the sandbox's cgroup, after the
// sandbox's Create and before its Start.
func MoveToScope(ctx context.Context, conn Systemd, unit, slice string, pids []int, memoryMax uint64) error {
	return startScopeAndWait(ctx, conn, moveDescription, unit, slice, pids, memoryMax)
}

// PrepareScope starts the transient scope unit under slice, with pid (a
// Holder) in it, Delegate=true and the pod's memory limit, in which runsc
// is then told to create the sandbox's cgroups (on cgroup v1, where runsc
// cannot place a systemd cgroupsPath itself). It waits as MoveToScope does.
func PrepareScope(ctx context.Context, conn Systemd, unit, slice string, pid int, memoryMax uint64) error {
	return startScopeAndWait(ctx, conn, prepareDescription, unit, slice, []int{pid}, memoryMax)
}

func startScopeAndWait(ctx context.Context, conn Systemd, description, unit, slice string, pids []int, memoryMax uint64) error {
	if !strings.HasSuffix(unit, scopeSuffix) {
		return fmt.Errorf("scope: %w: unit %q is not a .scope", ErrInvalidArgument, unit)
	}
	if err := validUnitName(unit); err != nil {
		return fmt.Errorf("scope: %w: %v", ErrInvalidArgument, err)
	}
	if _, err := ExpandSlice(slice); err != nil {
		return fmt.Errorf("scope %s: %w", unit, err)
	}
	if len(pids) == 0 {
		return fmt.Errorf("scope %s: %w: no pids", unit, ErrInvalidArgument)
	}
	for _, p := range pids {
		if p <= 0 || p > int(^uint32(0)>>1) {
			return fmt.Errorf("scope %s: %w: pid %d", unit, ErrInvalidArgument, p)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultScopeTimeout)
		defer cancel()
	}

	resetErr := conn.ResetFailedUnitContext(ctx, unit)
	var de godbus.Error
	if resetErr != nil && (errors.As(resetErr, &de) && de.Name == dbusNoSuchUnit) {
		resetErr = nil
	}

	result, err := startScope(ctx, conn, description, unit, slice, pids, memoryMax)
	if err != nil && errors.As(err, &de) && de.Name == dbusNoSuchProcess {
		// A helper exited between the listing and the call: systemd
		// refuses the whole unit for one gone pid. Move the living.
		if alive := livePIDs(pids); len(alive) > 0 && len(alive) < len(pids) {
			pids = alive
			result, err = startScope(ctx, conn, description, unit, slice, pids, memoryMax)
		}
	}
	if err != nil {
		if resetErr != nil {
			return fmt.Errorf("start transient unit %s in %s (pids %v): %w (reset-failed before it: %v)", unit, slice, pids, err, resetErr)
		}
		return fmt.Errorf("start transient unit %s in %s (pids %v): %w", unit, slice, pids, err)
	}
	select {
	case r := <-result:
		if r != "done" {
			resetAfter(conn, unit)
			return fmt.Errorf("start transient unit %s in %s (pids %v): %w: job result %q", unit, slice, pids, ErrScopeJobFailed, r)
		}
		return nil
	case <-ctx.Done():
		resetAfter(conn, unit)
		return fmt.Errorf("start transient unit %s in %s (pids %v): %w: %w", unit, slice, pids, ErrScopeTimeout, ctx.Err())
	}
}

// dbusNoSuchProcess is systemd's error for a PIDs property naming a process
// that does not exist (src/core/unit.c unit_pid_attachable).
const dbusNoSuchProcess = "org.freedesktop.systemd1.NoSuchProcess"

// startScope asks systemd for the transient scope and returns the channel
// its job result arrives on.
func startScope(ctx context.Context, conn Systemd, description, unit, slice string, pids []int, memoryMax uint64) (<-chan string, error) {
	// Buffered: go-systemd delivers the job result while holding its job
	// listener lock, so an unread unbuffered channel (we gave up on a
	// timeout) would block its signal loop for good.
	ch := make(chan string, 1)
	_, err := conn.StartTransientUnitContext(ctx, unit, "fail", scopeProperties(description, slice, pids, memoryMax), ch)
	return ch, err
}

// resetAfter clears a unit whose job failed or timed out, so that the next
// attempt with its name is not refused while it sits in state "failed".
func resetAfter(conn Systemd, unit string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.ResetFailedUnitContext(ctx, unit)
}

// livePIDs keeps the pids of processes that still exist.
func livePIDs(pids []int) []int {
	var out []int
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err == nil || errors.Is(err, syscall.EPERM) {
			out = append(out, p)
		}
	}
	return out
}

// Retriable reports whether a MoveToScope error may go away with a new
// D-Bus connection: the connection broke (systemd restarted, the bus
// dropped us), as opposed to systemd refusing the unit, the job failing,
// a timeout or a bad argument.
func Retriable(err error) bool {
	var de godbus.Error
	return err != nil && !errors.As(err, &de) && !errors.Is(err, ErrScopeJobFailed) &&
		!errors.Is(err, ErrScopeTimeout) && !errors.Is(err, ErrInvalidArgument) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}
