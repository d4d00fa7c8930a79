package admin

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/runsc-guard/runsc-guard/internal/config"
)

// newFlagSet returns the flag set of a command, with a usage text made of
// the synopsis and the description.
func newFlagSet(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: containerd-shim-runsc-guard-v1 %s %s\n\n%s\n\n", name, synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments, which no
// command takes.
func parseFlags(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

// guardConfigFlag adds --guard-config and returns a function loading it;
// the function reports a bad file on the flag set's output.
func guardConfigFlag(fs *flag.FlagSet, what string) func() (config.Config, bool) {
	path := fs.String("guard-config", config.Path(), "the guard's configuration `file` (for "+what+")")
	return func() (config.Config, bool) {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
			return cfg, false
		}
		return cfg, true
	}
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
