package admin

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
	"github.com/runsc-guard/runsc-guard/internal/config"
)

// The previous runtime_type of a handler the guard was put in front of is
// kept on the edited line itself, as a trailing comment:
//
//	runtime_type = "io.containerd.runsc-guard.v1" # runsc-guard: was "io.containerd.runsc.v1"
//
// so the record travels with the line (a config management tool that
// rewrites the file drops both together) and --uninstall restores the value
// byte for byte. A guard handler without the marker is restored to
// RuntimeTypeRunsc, the only shim the guard fronts.
const markerPrefix = "# runsc-guard: was "

// markerRe finds the marker at the end of a line; group 1 is the previous
// value as it was written (a TOML string).
var markerRe = regexp.MustCompile(` ?` + regexp.QuoteMeta(markerPrefix) + `(.*?)\r?$`)

// ErrNoHandler: the configuration has no handler to put behind the guard.
var ErrNoHandler = errors.New("no gVisor runtime handler")

// ErrEditCheck: an edit would change more than the runtime_type values
// (a bug, never written).
var ErrEditCheck = errors.New("edit check failed")

// ErrRuntimePath: a handler to switch sets runtime_path to another shim
// binary, which containerd would keep starting instead of the guard.
var ErrRuntimePath = errors.New("runtime_path bypasses the guard")

// Change is one runtime_type the configure command sets.
type Change struct {
	Handler *Handler
	From    string
	To      string
	// edit replaces File.Data[start:end] with text.
	start, end int
	text       string
	// markerStart/markerEnd: where the marker goes (install) or what of
	// it is removed (uninstall); markerText is inserted.
	markerStart, markerEnd int
	markerText             string
}

// PlanOptions selects what Plan changes.
type PlanOptions struct {
	// Handlers restricts the change to these handler names; empty means
	// every handler whose runtime_type is RuntimeTypeRunsc (install) or
	// RuntimeTypeGuard (uninstall).
	Handlers []string
	// Uninstall restores the previous runtime_type of guard handlers.
	Uninstall bool
}

// Plan computes the runtime_type edits over the loaded files. Handlers
// already in the wanted state produce no change, so planning over an
// installed configuration returns nothing: installing twice is a no-op.
func Plan(files []*ConfigFile, opts PlanOptions) ([]Change, error) {
	hs := allHandlers(files)
	var selected []*Handler
	if len(opts.Handlers) == 0 {
		for _, h := range hs {
			if h.RuntimeType == RuntimeTypeRunsc || h.RuntimeType == RuntimeTypeGuard {
				selected = append(selected, h)
			}
		}
		if len(selected) == 0 {
			return nil, fmt.Errorf("%w in %s: no runtime_type %q or %q under %s", ErrNoHandler, filePaths(files), RuntimeTypeRunsc, RuntimeTypeGuard, tomlKey(runtimesTables(files[0].Version)[0]))
		}
	} else {
		for _, name := range opts.Handlers {
			var found bool
			for _, h := range hs {
				if h.Name != name {
					continue
				}
				found = true
				if h.RuntimeType != RuntimeTypeRunsc && h.RuntimeType != RuntimeTypeGuard {
					return nil, fmt.Errorf("handler %s in %s has runtime_type %q: the guard fronts only %q", name, h.File.Path, h.RuntimeType, RuntimeTypeRunsc)
				}
				selected = append(selected, h)
			}
			if !found {
				return nil, fmt.Errorf("%w named %q in %s", ErrNoHandler, name, filePaths(files))
			}
		}
	}
	var out []Change
	for _, h := range selected {
		c, ok, err := planOne(h, opts.Uninstall)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, c)
		}
	}
	return out, nil
}

func planOne(h *Handler, uninstall bool) (Change, bool, error) {
	data := h.File.Data
	start, end := int(h.value.Offset), int(h.value.Offset+h.value.Length)
	raw := string(data[start:end])
	if strings.ContainsAny(raw, "\r\n") {
		return Change{}, false, fmt.Errorf("runtime_type of %s in %s is a multi-line string: edit it by hand", h.Key(), h.File.Path)
	}
	lineEnd := end + strings.IndexByte(string(data[end:])+"\n", '\n')
	if lineEnd > end && data[lineEnd-1] == '\r' {
		lineEnd--
	}
	c := Change{Handler: h, From: h.RuntimeType, start: start, end: end}
	if !uninstall {
		if h.BypassesGuard() {
			// Editing runtime_path too would be more than the one-line
			// change this command promises; say what to do instead.
			return Change{}, false, fmt.Errorf("%w: handler %s in %s sets runtime_path = %q, which containerd starts whatever runtime_type says: "+
				"remove runtime_path and set shim_path = %q in the guard's configuration (%s)",
				ErrRuntimePath, h.Key(), h.File.Path, h.RuntimePath, h.RuntimePath, config.Path())
		}
		if h.RuntimeType == RuntimeTypeGuard {
			return Change{}, false, nil
		}
		c.To = RuntimeTypeGuard
		c.text = strconv.Quote(RuntimeTypeGuard)
		c.markerStart, c.markerEnd = lineEnd, lineEnd
		c.markerText = " " + markerPrefix + raw
		return c, true, nil
	}
	if h.RuntimeType != RuntimeTypeGuard {
		return Change{}, false, nil
	}
	rest := string(data[end:lineEnd])
	c.To, c.text = RuntimeTypeRunsc, strconv.Quote(RuntimeTypeRunsc)
	c.markerStart, c.markerEnd = lineEnd, lineEnd
	if m := markerRe.FindStringSubmatchIndex(rest); m != nil {
		prev := rest[m[2]:m[3]]
		var v struct{ V string }
		if err := toml.Unmarshal([]byte("V = "+prev), &v); err != nil {
			return Change{}, false, fmt.Errorf("previous runtime_type of %s in %s: marker %q does not hold a TOML string: %w", h.Key(), h.File.Path, prev, err)
		}
		c.To, c.text = v.V, prev
		c.markerStart, c.markerEnd = end+m[0], end+m[3]
	}
	return c, true, nil
}

func filePaths(files []*ConfigFile) string {
	ps := make([]string, len(files))
	for i, f := range files {
		ps[i] = f.Path
	}
	return strings.Join(ps, ", ")
}

// Apply returns the new contents of every file the changes touch, after
// checking that each one parses and differs from the old one only in the
// runtime_type values of the changed handlers.
func Apply(changes []Change) (map[*ConfigFile][]byte, error) {
	byFile := map[*ConfigFile][]Change{}
	for _, c := range changes {
		byFile[c.Handler.File] = append(byFile[c.Handler.File], c)
	}
	out := map[*ConfigFile][]byte{}
	for f, cs := range byFile {
		// Edit from the end so earlier offsets stay valid. Every edit is
		// within its own line, and the value comes before the marker.
		type span struct {
			start, end int
			text       string
		}
		var spans []span
		for _, c := range cs {
			spans = append(spans, span{c.start, c.end, c.text}, span{c.markerStart, c.markerEnd, c.markerText})
		}
		slices.SortFunc(spans, func(a, b span) int { return b.start - a.start })
		data := slices.Clone(f.Data)
		for _, s := range spans {
			data = slices.Concat(data[:s.start], []byte(s.text), data[s.end:])
		}
		if err := checkEdit(f, cs, data); err != nil {
			return nil, err
		}
		out[f] = data
	}
	return out, nil
}

// checkEdit re-parses the edited file and compares it with the original
// with only the planned runtime_type values changed.
func checkEdit(f *ConfigFile, cs []Change, edited []byte) error {
	var got, want map[string]any
	if err := toml.Unmarshal(edited, &got); err != nil {
		return fmt.Errorf("%w: %s would not parse after the edit: %v", ErrEditCheck, f.Path, err)
	}
	if err := toml.Unmarshal(f.Data, &want); err != nil {
		return fmt.Errorf("%w: re-read %s: %v", ErrEditCheck, f.Path, err)
	}
	for _, c := range cs {
		rt, ok := lookup(want, append(slices.Clone(c.Handler.Table), c.Handler.Name)).(map[string]any)
		if !ok {
			return fmt.Errorf("%w: %s: %s vanished", ErrEditCheck, f.Path, c.Handler.Key())
		}
		rt["runtime_type"] = c.To
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%w: editing %s would change more than runtime_type", ErrEditCheck, f.Path)
	}
	return nil
}

// Configure is the configure command; see configureUsage.
func Configure(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("configure", "[--config FILE] [--handler NAME ...] [--uninstall] [--dry-run] [--backup]",
		fmt.Sprintf("Switches containerd's gVisor runtime handlers to runtime_type %q (or back, with --uninstall),\n"+
			"editing only the runtime_type lines. Restart containerd afterwards.", RuntimeTypeGuard), stderr)
	config := fs.String("config", DefaultContainerdConfig, "containerd configuration `file` (its imports are followed)")
	var handlers stringList
	fs.Var(&handlers, "handler", "switch only this runtime handler `name` (repeatable; default: every handler with runtime_type "+RuntimeTypeRunsc+")")
	uninstall := fs.Bool("uninstall", false, "restore the runtime_type each handler had before the guard")
	dryRun := fs.Bool("dry-run", false, "print the change as a unified diff and write nothing")
	backup := fs.Bool("backup", false, "keep a timestamped copy <file>.<UTC time>.runsc-guard.bak of each file changed")
	if !parseFlags(fs, args) {
		return exitUsage
	}
	files, err := LoadContainerdConfig(*config)
	if err != nil {
		fmt.Fprintf(stderr, "configure: refusing, nothing changed: %v\n", err)
		return exitFinding
	}
	changes, err := Plan(files, PlanOptions{Handlers: handlers, Uninstall: *uninstall})
	if err != nil {
		fmt.Fprintf(stderr, "configure: refusing, nothing changed: %v\n", err)
		return exitFinding
	}
	edited, err := Apply(changes)
	if err != nil {
		fmt.Fprintf(stderr, "configure: refusing, nothing changed: %v\n", err)
		return exitFinding
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "%s: config version %d\n", f.Path, f.Version)
	}
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "nothing to change")
		return exitOK
	}
	for _, c := range changes {
		fmt.Fprintf(stdout, "%s: %s: runtime_type %q -> %q\n", c.Handler.File.Path, c.Handler.Key(), c.From, c.To)
	}
	if *dryRun {
		for _, f := range files {
			if data, ok := edited[f]; ok {
				io.WriteString(stdout, unifiedDiff(f.Path, f.Data, data))
			}
		}
		fmt.Fprintln(stdout, "dry run: nothing written")
		return exitOK
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	for _, f := range files {
		data, ok := edited[f]
		if !ok {
			continue
		}
		if *backup {
			// The suffix must not end in .toml: imports are often
			// "conf.d/*.toml", and a backup must never be imported.
			b := fmt.Sprintf("%s.%s.runsc-guard.bak", f.Path, stamp)
			if err := atomicfile.Write(b, f.Data, 0o600); err != nil {
				fmt.Fprintf(stderr, "configure: back up %s: %v\n", f.Path, err)
				return exitFinding
			}
			fmt.Fprintf(stdout, "backup: %s\n", b)
		}
		if err := atomicfile.Write(f.Path, data, 0o644); err != nil {
			fmt.Fprintf(stderr, "configure: %v\n", err)
			return exitFinding
		}
	}
	fmt.Fprintf(stdout, "%d handler(s) changed; restart containerd to apply (systemctl restart containerd)\n", len(changes))
	return exitOK
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
