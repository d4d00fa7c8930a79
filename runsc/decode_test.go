package runsc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestDecodeHostile: what the runsc shim accepts, the guard accepts (a
// byte order mark); what would cost the guard unbounded time is refused
// with a clear error.
func TestDecodeHostile(t *testing.T) {
	bom := "\xEF\xBB\xBFbinary_name = \"/usr/bin/runsc\"\n[runsc_config]\n  network = \"none\"\n"
	if b, err := Binary([]byte(bom)); err != nil || b != "/usr/bin/runsc" {
		t.Errorf("Binary(with BOM) = %q, %v; want /usr/bin/runsc", b, err)
	}
	out, changed, err := SetFlags([]byte(bom), map[string]string{SystemdCgroupKey: "true"})
	if err != nil || len(changed) != 1 || strings.HasPrefix(string(out), "\xEF\xBB\xBF") || !strings.Contains(string(out), "network = 'none'") {
		t.Errorf("SetFlags(with BOM) = %q, %v, %v", out, changed, err)
	}
	var many strings.Builder
	for i := 0; many.Len() <= MaxOptionsSize; i++ {
		fmt.Fprintf(&many, "k%d = 1\n", i)
	}
	deep := "[runsc_config]\nx = " + strings.Repeat("{a = ", 10000) + "1" + strings.Repeat("}", 10000) + "\n"
	for name, body := range map[string]string{"over the size bound": many.String(), "10000 inline tables deep": deep} {
		if _, err := Binary([]byte(body)); !errors.Is(err, ErrOptionsTooLarge) {
			t.Errorf("%s: Binary error %v, want ErrOptionsTooLarge", name, err)
		}
		if _, _, err := SetFlags([]byte(body), map[string]string{SystemdCgroupKey: "true"}); !errors.Is(err, ErrOptionsTooLarge) {
			t.Errorf("%s: SetFlags error %v, want ErrOptionsTooLarge", name, err)
		}
	}
}

// BenchmarkSetFlagsLargest: the most keys an options file within
// MaxOptionsSize can hold, the guard's worst case per Create.
func BenchmarkSetFlagsLargest(b *testing.B) {
	var body strings.Builder
	body.WriteString("[runsc_config]\n")
	for i := 0; ; i++ {
		line := fmt.Sprintf("k%d = \"1\"\n", i)
		if body.Len()+len(line) > MaxOptionsSize {
			break
		}
		body.WriteString(line)
	}
	in := []byte(body.String())
	for b.Loop() {
		if _, _, err := SetFlags(in, map[string]string{SystemdCgroupKey: "true"}); err != nil {
			b.Fatal(err)
		}
	}
}
