package proxy

import (
	"flag"
	"fmt"
	"io"
)

// Actions the shim binary understands as its first positional argument.
const (
	actionStart  = "start"
	actionDelete = "delete"
	// actionServe is the guard's own long-running server. containerd never
	// passes it: the start action re-executes the guard with it.
	actionServe = "serve"
)

// Flags are the shim command-line flags containerd 1.6 to 2.x pass, in the
// form containerd's shim package defines them. Args keeps the original
// command line so the runsc shim can be run with exactly the same one.
type Flags struct {
	Namespace     string
	ID            string
	Address       string
	PublishBinary string
	Bundle        string
	Socket        string
	DebugSocket   string
	Debug         bool
	Version       bool
	Info          bool
	Action        string
	Args          []string
}

// ParseFlags parses a shim command line (without the program name).
func ParseFlags(args []string) (Flags, error) {
	f := Flags{Args: append([]string(nil), args...)}
	fs := flag.NewFlagSet("containerd-shim-runsc-guard-v1", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&f.Debug, "debug", false, "enable debug output in logs")
	fs.BoolVar(&f.Version, "v", false, "show the shim version and exit")
	fs.BoolVar(&f.Version, "version", false, "show the shim version and exit")
	fs.BoolVar(&f.Info, "info", false, "print the runtime info of the runsc shim")
	fs.StringVar(&f.Namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&f.ID, "id", "", "id of the task")
	fs.StringVar(&f.Address, "address", "", "grpc address back to main containerd")
	fs.StringVar(&f.PublishBinary, "publish-binary", "", "path to publish binary")
	fs.StringVar(&f.Bundle, "bundle", "", "path to the bundle if not workdir")
	fs.StringVar(&f.Socket, "socket", "", "socket path to serve")
	fs.StringVar(&f.DebugSocket, "debug-socket", "", "debug socket path to serve")
	if err := fs.Parse(args); err != nil {
		return Flags{}, fmt.Errorf("parse shim flags %q: %w", args, err)
	}
	f.Action = fs.Arg(0)
	return f, nil
}
