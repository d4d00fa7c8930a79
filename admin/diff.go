package admin

import (
	"fmt"
	"strings"
)

// diffContext is the number of unchanged lines around each change.
const diffContext = 3

// unifiedDiff renders old -> new as a unified diff. configure's edits
// never add or remove a line, so lines correspond one to one and a change
// is a line that differs; that keeps this far simpler than a general diff.
// It returns "" when the texts are equal, and one hunk replacing the whole
// file should the line counts ever differ.
func unifiedDiff(name string, old, new []byte) string {
	a := strings.SplitAfter(string(old), "\n")
	b := strings.SplitAfter(string(new), "\n")
	if len(a) != len(b) {
		return fmt.Sprintf("--- %s\n+++ %s\n@@ -1,%d +1,%d @@\n%s%s", name, name, len(a), len(b), prefixLines("-", a), prefixLines("+", b))
	}
	var changed []int
	for i := range a {
		if a[i] != b[i] {
			changed = append(changed, i)
		}
	}
	if len(changed) == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", name, name)
	for i := 0; i < len(changed); {
		// Grow a hunk while the next change is within its context.
		j := i
		for j+1 < len(changed) && changed[j+1]-changed[j] <= 2*diffContext {
			j++
		}
		lo := max(changed[i]-diffContext, 0)
		hi := min(changed[j]+diffContext+1, len(a))
		if hi > lo && a[hi-1] == "" { // SplitAfter's empty tail
			hi--
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", lo+1, hi-lo, lo+1, hi-lo)
		for k := lo; k < hi; k++ {
			if a[k] == b[k] {
				sb.WriteString(" " + withNewline(a[k]))
				continue
			}
			sb.WriteString("-" + withNewline(a[k]))
			sb.WriteString("+" + withNewline(b[k]))
		}
		i = j + 1
	}
	return sb.String()
}

func prefixLines(p string, lines []string) string {
	var sb strings.Builder
	for _, l := range lines {
		if l != "" {
			sb.WriteString(p + withNewline(l))
		}
	}
	return sb.String()
}

func withNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n\\ No newline at end of file\n"
}
