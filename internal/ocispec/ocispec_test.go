package ocispec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"ociVersion":"1.0.2","annotations":{"a":"b"},"linux":{"cgroupsPath":"/x"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Read(dir)
	if err != nil || s.Annotations["a"] != "b" || s.Linux.CgroupsPath != "/x" {
		t.Fatalf("Read = %+v, %v", s, err)
	}
	if _, err := Read(t.TempDir()); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("Read of a bundle without a spec: %v, want an error naming config.json", err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"linux":`), 0o600)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Errorf("Read of a broken spec: %v, want a parse error", err)
	}
}
