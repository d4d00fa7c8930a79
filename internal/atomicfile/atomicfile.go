// Package atomicfile replaces files so that readers (containerd reading its
// configuration or a bundle, the node-exporter reading a textfile) never
// see half of one.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data through a temporary file in the same
// directory, synced before the rename. An existing file keeps its
// permissions (perm applies to a new one), and a symlink is written
// through, not replaced: configuration is often managed elsewhere and
// linked in.
func Write(path string, data []byte, perm os.FileMode) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	return replace(path, data, perm)
}

// Replace replaces path with data like Write, but never through a symlink:
// a symlink at path is itself replaced, so its target is untouched. For the
// files the guard writes into containers' bundles, which other processes
// could have planted.
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm)
}

func replace(path string, data []byte, perm os.FileMode) error {
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() {
		perm = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
