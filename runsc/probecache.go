package runsc

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
)

// The probe cache file: the answers of definite probes, by probe key, with
// the identity of the binary that gave them. Bounded: a file over
// maxCacheSize is ignored, and one that would hold more than
// maxCacheEntries starts over.
const (
	maxCacheSize    = 256 << 10
	maxCacheEntries = 128
)

type cachedProbe struct {
	ID  string `json:"id"`
	Out string `json:"out"`
	OK  bool   `json:"ok"`
}

// binaryID identifies the file at path: device, inode, size, modification
// and change time. A runsc upgraded or replaced in place gets another
// identity, so its old answers are not used. "" when it cannot be read.
func binaryID(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d:%d.%d:%d.%d", st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// readCache reads the cache file; a missing, oversized or unreadable one
// is an empty cache.
func readCache(file string) map[string]cachedProbe {
	m := map[string]cachedProbe{}
	b, err := safefile.ReadFile(file, maxCacheSize)
	if err != nil {
		return m
	}
	if json.Unmarshal(b, &m) != nil {
		return map[string]cachedProbe{}
	}
	return m
}

// loadProbe returns the cached answer to key from the binary with identity
// id.
func loadProbe(file, key, id string) (probeResult, bool) {
	c, ok := readCache(file)[key]
	if !ok || c.ID != id {
		return probeResult{}, false
	}
	return probeResult{out: c.Out, ok: c.OK}, true
}

// storeProbe adds an answer to the cache file, replaced atomically. Two
// guards storing at once may lose one answer: it is asked again later.
// Failures are ignored: the cache only saves time.
func storeProbe(file, key, id string, r probeResult) {
	m := readCache(file)
	if len(m) >= maxCacheEntries {
		m = map[string]cachedProbe{}
	}
	m[key] = cachedProbe{ID: id, Out: r.out, OK: r.ok}
	b, err := json.Marshal(m)
	if err != nil || len(b) > maxCacheSize {
		return
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return
	}
	_ = atomicfile.Replace(file, b, 0o600)
}
