package admin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Runtime types of the handlers the commands look at.
const (
	// RuntimeTypeRunsc is gVisor's own shim, containerd-shim-runsc-v1.
	RuntimeTypeRunsc = "io.containerd.runsc.v1"
	// RuntimeTypeGuard is runsc-guard, containerd-shim-runsc-guard-v1.
	RuntimeTypeGuard = "io.containerd.runsc-guard.v1"
	// runtimeTypeRunc is the runc shim, whose SystemdCgroup option is the
	// node's cgroup driver (kubelet reads it from containerd too).
	runtimeTypeRunc = "io.containerd.runc.v2"
)

// DefaultContainerdConfig is where containerd reads its configuration.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// maxConfigVersion is the newest containerd config version these commands
// know (containerd v2.4: version.ConfigVersion = 4).
const maxConfigVersion = 4

var (
	// ErrConfigParse: a containerd configuration file is not valid TOML.
	ErrConfigParse = errors.New("containerd config does not parse")
	// ErrConfigVersion: a configuration version these commands do not know.
	ErrConfigVersion = errors.New("unsupported containerd config version")
)

// runtimesTables returns the tables that hold CRI runtime handlers in a
// configuration file of the given version, the one containerd reads first.
//
// containerd treats a missing version as 1 and migrates each file by its
// own version before merging (containerd v2
// cmd/containerd/server/config/config.go, LoadConfigWithPlugins and
// v1MigratePluginName): version 1 names plugins by their short id
// ("cri"), version 2 by their URI ("io.containerd.grpc.v1.cri"), and the
// CRI runtime plugin moves the runtimes of a version < 3 file to
// "io.containerd.cri.v1.runtime" (plugins/cri/runtime/plugin.go
// configMigration). A version 1 file may name plugins by URI too: ids
// with a dot are kept. So every file is searched for all three tables;
// the version decides only which one is reported as expected.
func runtimesTables(version int) [][]string {
	v1 := []string{"plugins", "cri", "containerd", "runtimes"}
	v2 := []string{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"}
	v3 := []string{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"}
	switch {
	case version <= 1:
		return [][]string{v1, v2, v3}
	case version == 2:
		return [][]string{v2, v1, v3}
	default:
		return [][]string{v3, v2, v1}
	}
}

// ConfigFile is one containerd configuration file: the main one or one it
// imports.
type ConfigFile struct {
	Path string
	// Version is the file's "version", 1 when it has none (containerd's rule).
	Version int
	// Data is the file as read.
	Data []byte
	// Doc is the file decoded into generic TOML values.
	Doc map[string]any
	// Imports are the files its "imports" resolve to, in order.
	Imports []string
	// Handlers are the CRI runtime handlers it defines.
	Handlers []*Handler
}

// Handler is a CRI runtime handler ([...containerd.runtimes.<Name>]).
type Handler struct {
	Name string
	// File is the configuration file that defines it.
	File *ConfigFile
	// Table is the key path of the runtimes table it is in.
	Table []string
	// RuntimeType is its runtime_type ("" when unset).
	RuntimeType string
	// RuntimePath is its runtime_path ("" when unset): when set, containerd
	// starts that binary whatever runtime_type names.
	RuntimePath string
	// Options is its options table (TypeUrl, ConfigPath, SystemdCgroup, ...).
	Options map[string]any
	// value is where the runtime_type value sits in File.Data; line is
	// the 1-based line it ends on.
	value unstable.Range
	line  int
}

// Key is the dotted TOML key of the handler's table, for messages.
func (h *Handler) Key() string {
	return tomlKey(append(slices.Clone(h.Table), h.Name))
}

// BypassesGuard reports whether the handler's runtime_path names a binary
// other than the guard: containerd (1.6 and later) then starts that binary
// and runtime_type only names the runtime, so switching runtime_type to the
// guard's would change nothing.
func (h *Handler) BypassesGuard() bool {
	return h.RuntimePath != "" && filepath.Base(h.RuntimePath) != guardShimBinary
}

// ConfigPath returns the handler's options.ConfigPath, the runsc shim's
// TOML options file ("" when unset).
func (h *Handler) ConfigPath() string {
	s, _ := h.Options["ConfigPath"].(string)
	return s
}

// tomlKey renders a key path the way it is written in a table header.
func tomlKey(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if p != "" && strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == "" {
			parts[i] = p
		} else {
			parts[i] = fmt.Sprintf("%q", p)
		}
	}
	return strings.Join(parts, ".")
}

// LoadContainerdConfig reads the configuration at path and every file it
// imports, transitively and breadth first as containerd does, each file
// once. Imports are glob patterns, relative to the directory of the file
// that names them (containerd's resolveImports). A file that does not parse
// is an error wrapping ErrConfigParse that names the file, line and column.
func LoadContainerdConfig(path string) ([]*ConfigFile, error) {
	var files []*ConfigFile
	seen := map[string]bool{}
	pending := []string{path}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		f, err := loadConfigFile(p)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		pending = append(pending, f.Imports...)
	}
	return files, nil
}

func loadConfigFile(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read containerd config: %w", err)
	}
	f := &ConfigFile{Path: path, Data: data}
	if err := toml.Unmarshal(data, &f.Doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%w: %s line %d column %d: %v", ErrConfigParse, path, row, col, err)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConfigParse, path, err)
	}
	switch v := f.Doc["version"].(type) {
	case nil:
		f.Version = 1
	case int64:
		f.Version = int(v)
	default:
		return nil, fmt.Errorf("%w: %s: version = %v is not an integer", ErrConfigVersion, path, v)
	}
	if f.Version < 1 || f.Version > maxConfigVersion {
		return nil, fmt.Errorf("%w: %s has version %d (known: 1 to %d)", ErrConfigVersion, path, f.Version, maxConfigVersion)
	}
	if f.Imports, err = resolveImports(f); err != nil {
		return nil, err
	}
	if err := f.findHandlers(); err != nil {
		return nil, err
	}
	return f, nil
}

// resolveImports resolves the file's imports like containerd: cleaned,
// relative to the file's directory, globbed when they contain "*".
func resolveImports(f *ConfigFile) ([]string, error) {
	raw, ok := f.Doc["imports"]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s: imports is not an array", ErrConfigParse, f.Path)
	}
	var out []string
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s: imports holds %v, not a path", ErrConfigParse, f.Path, v)
		}
		p := filepath.Clean(s)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(f.Path), p)
		}
		if !strings.Contains(p, "*") {
			out = append(out, p)
			continue
		}
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("resolve import %q of %s: %w", s, f.Path, err)
		}
		out = append(out, m...)
	}
	return out, nil
}

// findHandlers lists the runtime handlers of the file and locates each
// runtime_type value in the text, so that an edit can replace exactly it.
func (f *ConfigFile) findHandlers() error {
	for _, table := range runtimesTables(f.Version) {
		m, ok := lookup(f.Doc, table).(map[string]any)
		if !ok {
			continue
		}
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			rt, ok := m[name].(map[string]any)
			if !ok {
				continue
			}
			h := &Handler{Name: name, File: f, Table: table}
			h.RuntimeType, _ = rt["runtime_type"].(string)
			h.RuntimePath, _ = rt["runtime_path"].(string)
			h.Options, _ = rt["options"].(map[string]any)
			f.Handlers = append(f.Handlers, h)
		}
	}
	return f.locateValues()
}

// lookup returns the value at a key path of a decoded document.
func lookup(doc map[string]any, path []string) any {
	var cur any = doc
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// locateValues walks the file's syntax tree and records where each
// handler's runtime_type value is, whichever way it was written: under the
// handler's table header, as a dotted key of a parent table, or inside an
// inline table.
func (f *ConfigFile) locateValues() error {
	want := map[string]*Handler{}
	for _, h := range f.Handlers {
		if h.RuntimeType != "" {
			want[keyID(append(slices.Clone(h.Table), h.Name, "runtime_type"))] = h
		}
	}
	if len(want) == 0 {
		return nil
	}
	var p unstable.Parser
	p.Reset(f.Data)
	var table []string
	var visit func(prefix []string, kv *unstable.Node)
	visit = func(prefix []string, kv *unstable.Node) {
		key := append(slices.Clone(prefix), keyParts(kv.Key())...)
		v := kv.Value()
		if v.Kind == unstable.InlineTable {
			it := v.Children()
			for it.Next() {
				if c := it.Node(); c.Kind == unstable.KeyValue {
					visit(key, c)
				}
			}
			return
		}
		if h, ok := want[keyID(key)]; ok && v.Kind == unstable.String {
			h.value = v.Raw
			h.line = p.Shape(v.Raw).End.Line
			delete(want, keyID(key))
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table = keyParts(e.Key())
		case unstable.ArrayTable:
			// Keys under [[x]] live in an array element: no handler there.
			table = append(keyParts(e.Key()), "\x00[]")
		case unstable.KeyValue:
			visit(table, e)
		}
	}
	if err := p.Error(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrConfigParse, f.Path, err)
	}
	for _, h := range want {
		return fmt.Errorf("%w: %s: runtime_type of %s not found in the text", ErrConfigParse, f.Path, h.Key())
	}
	return nil
}

func keyParts(it unstable.Iterator) []string {
	var out []string
	for it.Next() {
		out = append(out, string(it.Node().Data))
	}
	return out
}

func keyID(path []string) string { return strings.Join(path, "\x00") }

// allHandlers returns the handlers of every file, in load order.
func allHandlers(files []*ConfigFile) []*Handler {
	var out []*Handler
	for _, f := range files {
		out = append(out, f.Handlers...)
	}
	return out
}
