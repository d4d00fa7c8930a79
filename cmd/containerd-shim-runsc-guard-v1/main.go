//go:build linux

// Command containerd-shim-runsc-guard-v1 is the containerd shim v2
// io.containerd.runsc-guard.v1: gVisor's runsc shim, with pod memory limits
// that hold.
package main

import (
	"os"

	"github.com/runsc-guard/runsc-guard/shim"
)

// version is stamped by the Makefile (-ldflags -X main.version=...).
var version = "dev"

func main() {
	os.Exit(shim.Run(os.Args[1:], version))
}
