//go:build linux

// Command containerd-shim-runsc-guard-v1 is the containerd shim v2
// io.containerd.runsc-guard.v1: gVisor's runsc shim, with pod memory limits
// that hold. Its operator commands (audit, doctor, configure) share the
// binary, as does the holder of a transient scope the guard starts on
// cgroup v1 nodes (cgroupfix.HolderArg); containerd's shim actions always
// start with a flag, so a first argument naming one of them is
// unambiguous.
package main

import (
	"os"

	"github.com/runsc-guard/runsc-guard/admin"
	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/config"
	"github.com/runsc-guard/runsc-guard/proxy"
	"github.com/runsc-guard/runsc-guard/sandboxfix"
)

// version is stamped by the Makefile (-ldflags -X main.version=...).
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == cgroupfix.HolderArg {
			cgroupfix.RunHolder(os.Stdin)
			return
		}
		if cmd, ok := admin.Commands[os.Args[1]]; ok {
			os.Exit(cmd(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(proxy.Run(os.Args[1:], version, func(cfg config.Config) proxy.CreateHook { return sandboxfix.New(cfg) }))
}
