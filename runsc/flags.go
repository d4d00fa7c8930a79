package runsc

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

// CPUNumFromQuotaKey is the runsc flag that lowers --cpu-num to
// ceil(quota/period) of the sandbox cgroup (runsc/sandbox/sandbox.go).
const CPUNumFromQuotaKey = "cpu-num-from-quota"

// SetFlags returns the runsc shim options TOML with each of flags set
// in its [runsc_config] table, keeping every other key, and which of them
// it had to change (already equal string values are left alone). With
// nothing to change it returns the input unchanged.
func SetFlags(tomlBody []byte, flags map[string]string) (out []byte, changed []string, err error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(tomlBody)) > 0 {
		if err := Decode(tomlBody, &doc); err != nil {
			return nil, nil, fmt.Errorf("parse runsc options: %w", err)
		}
	}
	var cfg map[string]any
	switch t := doc[runscConfigTable].(type) {
	case nil:
		if _, present := doc[runscConfigTable]; present {
			return nil, nil, fmt.Errorf("parse runsc options: %s is not a table", runscConfigTable)
		}
		cfg = map[string]any{}
	case map[string]any:
		cfg = t
	default:
		return nil, nil, fmt.Errorf("parse runsc options: %s is a %T, not a table", runscConfigTable, t)
	}
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		if v, ok := cfg[k].(string); ok && v == flags[k] {
			continue
		}
		cfg[k] = flags[k]
		changed = append(changed, k)
	}
	if len(changed) == 0 {
		return tomlBody, nil, nil
	}
	doc[runscConfigTable] = cfg
	if out, err = toml.Marshal(doc); err != nil {
		return nil, nil, fmt.Errorf("encode runsc options: %w", err)
	}
	return out, changed, nil
}

// Binary returns the runsc binary the runsc shim options name
// (binary_name), or "runsc" when they name none.
func Binary(tomlBody []byte) (string, error) {
	var doc struct {
		BinaryName string `toml:"binary_name"`
	}
	if err := Decode(tomlBody, &doc); err != nil {
		return "", fmt.Errorf("parse runsc options: %w", err)
	}
	if doc.BinaryName == "" {
		return "runsc", nil
	}
	return doc.BinaryName, nil
}
