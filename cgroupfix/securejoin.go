package cgroupfix

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxPathLen (Linux PATH_MAX) and maxPathParts bound what SecureJoin
// resolves.
const (
	maxPathLen   = 4096
	maxPathParts = 64
)

// SecureJoin joins rel under root as filepath.Join(root,
// filepath.Clean("/"+rel)), so ".." cannot climb above root lexically, and
// then resolves symlinks in the longest prefix that exists. It returns the
// resolved path (with the not-yet-existing tail appended), or an error
// wrapping ErrPathEscape if the resolved path leaves root or if an existing
// component is a symlink that cannot be resolved (a dangling link could be
// followed outside root by a later mkdir or create).
//
// Only symlinks that exist at call time are checked; cgroupfs has none, and
// the roots passed here are owned by root, so there is no one to race.
func SecureJoin(root, rel string) (string, error) {
	p, _, err := secureJoin(root, rel)
	return p, err
}

// secureJoin is SecureJoin that also returns root with its symlinks
// resolved.
func secureJoin(root, rel string) (resolved, realRoot string, err error) {
	if strings.IndexByte(rel, 0) >= 0 || strings.IndexByte(root, 0) >= 0 {
		return "", "", fmt.Errorf("%w: NUL byte in %q", ErrInvalidPath, rel)
	}
	// Bounds: the kernel opens no path longer than PATH_MAX, and cgroup
	// trees are a few levels deep. Without them a hostile path costs time
	// quadratic in its parts (each step up resolves the whole prefix).
	if len(rel) > maxPathLen || strings.Count(rel, "/") > maxPathParts {
		return "", "", fmt.Errorf("%w: %d bytes in %d parts, at most %d bytes and %d parts", ErrInvalidPath,
			len(rel), strings.Count(rel, "/")+1, maxPathLen, maxPathParts)
	}
	cleanRoot := filepath.Clean(root)
	realRoot, err = filepath.EvalSymlinks(cleanRoot)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("resolve root %s: %w", root, err)
		}
		realRoot = cleanRoot
	}
	joined := filepath.Join(cleanRoot, filepath.Clean("/"+rel))

	// Walk up from joined to the longest prefix that resolves.
	cur, tail := joined, ""
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			if !Within(realRoot, r) {
				return "", "", fmt.Errorf("%w: %s resolves to %s, outside %s", ErrPathEscape, joined, r, realRoot)
			}
			return filepath.Join(r, tail), realRoot, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("resolve %s: %w", cur, err)
		}
		if _, lerr := os.Lstat(cur); lerr == nil {
			// cur exists but does not resolve: a dangling symlink
			// (or one through a dangling link). Refuse it.
			return "", "", fmt.Errorf("%w: %s is a symlink that does not resolve", ErrPathEscape, cur)
		}
		if cur == cleanRoot || len(cur) <= len(cleanRoot) {
			// Root itself does not exist: nothing to resolve.
			return joined, realRoot, nil
		}
		tail = filepath.Join(filepath.Base(cur), tail)
		cur = filepath.Dir(cur)
	}
}
