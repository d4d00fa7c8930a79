package runsc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/pelletier/go-toml/v2"
)

// MaxOptionsSize bounds a runsc shim options file. Real ones are a few
// hundred bytes; the bound keeps a hostile one from costing the guard
// seconds of parsing per Create (go-toml's cost grows faster than the key
// count).
const MaxOptionsSize = 64 << 10

// maxDepth bounds how deeply tables and arrays nest in an options file
// (the runsc shim's own have two levels).
const maxDepth = 16

// ErrOptionsTooLarge: an options file over MaxOptionsSize or nested deeper
// than the guard reads.
var ErrOptionsTooLarge = errors.New("runsc options too large")

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Decode parses a runsc shim options file into v as the runsc shim would:
// a leading UTF-8 byte order mark is skipped (the runsc shim's TOML
// decoder skips it too), and the size and nesting are bounded.
func Decode(body []byte, v any) error {
	body, err := clean(body)
	if err != nil {
		return err
	}
	return toml.Unmarshal(body, v)
}

// clean strips the byte order mark and enforces the bounds.
func clean(body []byte) ([]byte, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	if len(body) > MaxOptionsSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrOptionsTooLarge, len(body), MaxOptionsSize)
	}
	if d := nesting(body); d > maxDepth {
		return nil, fmt.Errorf("%w: nested %d deep, at most %d", ErrOptionsTooLarge, d, maxDepth)
	}
	return body, nil
}

// nesting is an upper bound of how deeply inline tables and arrays nest:
// brackets inside strings and comments count too, which can only make it
// larger.
func nesting(body []byte) int {
	depth, deepest := 0, 0
	for _, c := range body {
		switch c {
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			depth = max(depth-1, 0)
		}
	}
	return deepest
}
