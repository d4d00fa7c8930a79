package proxy

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Run runs the shim with the command line args (without the program name)
// and returns the process exit code. version is printed by -v; newHook
// gives each guard server its CreateHook (nil: pure pass-through).
//
// containerd reads the start action's stdout (with stderr combined) as the
// address of the task API, so nothing else may be written there during
// start; the guard logs to the bundle's "log" fifo, which containerd copies
// into its own log.
func Run(args []string, version string, newHook NewHook) int {
	f, err := ParseFlags(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runsc-guard: %v\n", err)
		return 2
	}
	if f.Version {
		fmt.Printf("containerd-shim-runsc-guard-v1:\n  Version:  %s\n", version)
		return 0
	}
	ctx := context.Background()
	if f.Namespace != "" {
		ctx = namespaces.WithNamespace(ctx, f.Namespace)
	}
	if f.Info {
		// Runtime info (containerd 2.x introspection) is the runsc shim's.
		return passThrough(ctx, f, os.Stdin, os.Stdout, os.Stderr)
	}
	switch f.Action {
	case actionStart:
		closeLog := setLogger(ctx, f, 500*time.Millisecond)
		defer closeLog()
		addr, err := Start(ctx, f, os.Stdin)
		if err != nil {
			log.G(ctx).WithError(err).WithField("container_id", f.ID).Error("start")
			fmt.Fprintf(os.Stderr, "runsc-guard: %v", err)
			return 1
		}
		fmt.Fprint(os.Stdout, addr)
		return 0
	case actionDelete:
		closeLog := setLogger(ctx, f, 500*time.Millisecond)
		defer closeLog()
		return Delete(ctx, f, os.Stdin, os.Stdout, os.Stderr)
	case actionServe:
		closeLog := setLogger(ctx, f, 10*time.Second)
		defer closeLog()
		if err := Serve(ctx, f, newHook); err != nil {
			log.G(ctx).WithError(err).Error("serve")
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "runsc-guard: unknown action %q (want start or delete)\n", f.Action)
		return 2
	}
}

// setLogger points the logger at the "log" fifo containerd reads from the
// bundle (the working directory), as containerd's own shims do. Where there
// is no reader within wait (the shim run by hand), logs are dropped rather
// than written to stdout or stderr, which containerd parses.
func setLogger(ctx context.Context, f Flags, wait time.Duration) func() {
	l := log.L.Logger
	_ = log.SetFormat(log.TextFormat)
	if f.Debug {
		_ = log.SetLevel("debug")
	}
	dir := f.Bundle
	if dir == "" {
		dir, _ = os.Getwd()
	}
	octx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var w io.WriteCloser
	var err error
	if f.Action == actionServe {
		// Like containerd's shims: stderr goes to the fifo too, so a
		// panic ends up in containerd's log.
		w, err = fifo.OpenFifoDup2(octx, filepath.Join(dir, "log"), unix.O_WRONLY, 0o700, int(os.Stderr.Fd()))
	} else {
		w, err = fifo.OpenFifo(octx, filepath.Join(dir, "log"), unix.O_WRONLY, 0o700)
	}
	if err != nil {
		l.SetOutput(io.Discard)
		return func() {}
	}
	l.SetOutput(w)
	log.L = log.L.WithFields(log.Fields{"runtime": "io.containerd.runsc-guard.v1", "pid": os.Getpid()})
	return func() { w.Close() }
}
