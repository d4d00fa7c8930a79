// Package admin holds the operator subcommands of the guard binary:
//
//	containerd-shim-runsc-guard-v1 audit      lists every gVisor sandbox on the node and says which are at risk
//	containerd-shim-runsc-guard-v1 doctor     checks containerd, runsc and cgroups and says what to change
//	containerd-shim-runsc-guard-v1 configure  puts the node's runsc handlers behind the guard (used by install.sh)
//
// containerd starts the shim as "<shim> -namespace NS ... start": flags come
// first, so a first argument naming one of Commands is unambiguous.
//
// Every path the commands read (/proc, the cgroupfs mount, containerd's state
// directory and configuration) is a flag, and every program they run is
// behind a function value, so the tests run on fake trees without root.
package admin

import "io"

// Commands maps a subcommand name to its entry point. Each returns the
// process exit status: 0 success, 1 a finding (AT-RISK sandbox, doctor
// error, configure refusal), 2 bad usage.
var Commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"audit":     Audit,
	"doctor":    Doctor,
	"configure": Configure,
}

// Exit statuses shared by the commands.
const (
	exitOK      = 0
	exitFinding = 1
	exitUsage   = 2
)
