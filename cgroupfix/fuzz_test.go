package cgroupfix

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func hasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

func FuzzParseCgroupsPath(f *testing.F) {
	for _, s := range []string{
		burstablePath, guaranteedPath, besteffortPath, ":runsc:abc", "-.slice:p:n",
		"kubepods.slice::kubepods-besteffort.slice", "/kubepods/burstable/" + podUIDfs + "/" + sandbox,
		"kubepods/x", misplaced, "", "/", "..", "/a/../../b", "a--b.slice:c:d", "a.slice:b:../../x",
		"a/b.slice:c:d", "\x00", "a.slice:b:c:d", "::", ".slice::", "-.slice::-.slice",
	} {
		f.Add(s)
	}
	known := []error{ErrEmptyPath, ErrInvalidPath, ErrInvalidSlice, ErrPathEscape}
	f.Fuzz(func(t *testing.T, p string) {
		cp, err := ParseCgroupsPath(p)
		if err != nil {
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("ParseCgroupsPath(%q) error = %v, not one of the sentinels", p, err)
		}
		if !strings.HasPrefix(cp.Dir, "/") || filepath.Clean(cp.Dir) != cp.Dir || hasDotDot(cp.Dir) || strings.ContainsRune(cp.Dir, 0) {
			t.Fatalf("ParseCgroupsPath(%q).Dir = %q, want a clean absolute path without \"..\" or NUL", p, cp.Dir)
		}
		if !Within(cp.Parent, cp.Dir) || hasDotDot(cp.Parent) {
			t.Fatalf("ParseCgroupsPath(%q): Parent %q does not contain Dir %q", p, cp.Parent, cp.Dir)
		}
		if cp.Raw != p {
			t.Fatalf("ParseCgroupsPath(%q).Raw = %q", p, cp.Raw)
		}
		if (cp.Driver == DriverSystemd) != IsSystemdPath(p) {
			t.Fatalf("ParseCgroupsPath(%q).Driver = %v, IsSystemdPath = %v", p, cp.Driver, IsSystemdPath(p))
		}
		if cp.Driver == DriverSystemd && cp.Dir == cp.Parent {
			t.Fatalf("ParseCgroupsPath(%q): systemd Dir %q equals its Parent", p, cp.Dir)
		}
	})
}

func FuzzExpandSlice(f *testing.F) {
	for _, s := range []string{
		"-.slice", "system.slice", "kubepods-burstable-" + podUID + ".slice", "a-b-c.slice", "a--b.slice",
		"-a.slice", "a-.slice", "a/b.slice", ".slice", "..slice", "...slice", "a", "", "-", `a\x2d.slice`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ExpandSlice(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSlice) {
				t.Fatalf("ExpandSlice(%q) error = %v, want %v", s, err, ErrInvalidSlice)
			}
			return
		}
		if s == "-.slice" {
			if got != "/" {
				t.Fatalf("ExpandSlice(%q) = %q, want /", s, got)
			}
			return
		}
		if !strings.HasPrefix(got, "/") || filepath.Clean(got) != got || hasDotDot(got) {
			t.Fatalf("ExpandSlice(%q) = %q, want a clean absolute path without \"..\"", s, got)
		}
		comps := strings.Split(got[1:], "/")
		if comps[len(comps)-1] != s {
			t.Fatalf("ExpandSlice(%q) = %q, want it to end in the slice itself", s, got)
		}
		for i, c := range comps {
			if !strings.HasSuffix(c, ".slice") {
				t.Fatalf("ExpandSlice(%q) = %q: component %q is not a slice", s, got, c)
			}
			if i > 0 && !strings.HasPrefix(c, strings.TrimSuffix(comps[i-1], ".slice")+"-") {
				t.Fatalf("ExpandSlice(%q) = %q: %q is not a child of %q", s, got, c, comps[i-1])
			}
		}
		if want := strings.Count(strings.TrimSuffix(s, ".slice"), "-") + 1; len(comps) != want {
			t.Fatalf("ExpandSlice(%q) = %q: %d components, want %d", s, got, len(comps), want)
		}
	})
}

func FuzzParseMemoryMax(f *testing.F) {
	for _, s := range []string{
		"max", "max\n", "268435456\n", v1Unlimited, "9223372036854775807", "18446744073709551615",
		"18446744073709551616", "-1", "0", "", " ", "lots", "+1", "0x10", "1e9", "256M", "00012",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseMemoryMax(strings.NewReader(s))
		trimmed := strings.TrimSpace(s)
		if trimmed == "max" {
			if v != 0 || err != nil {
				t.Fatalf("ParseMemoryMax(%q) = %d, %v, want 0 (unlimited), nil", s, v, err)
			}
			return
		}
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseMemoryMax(%q) error = %v (%T), want a *ParseError", s, err, err)
			}
			if v != 0 {
				t.Fatalf("ParseMemoryMax(%q) = %d with error %v, want 0", s, v, err)
			}
			return
		}
		if v >= memoryUnlimitedThreshold {
			t.Fatalf("ParseMemoryMax(%q) = %d, at or above the unlimited threshold", s, v)
		}
		n, perr := strconv.ParseUint(trimmed, 10, 64)
		if perr != nil || n == 0 || strings.HasPrefix(trimmed, "-") || strings.HasPrefix(trimmed, "+") {
			t.Fatalf("ParseMemoryMax(%q) = %d, nil, but it is not a positive decimal (%v)", s, v, perr)
		}
		if v != 0 && v != n {
			t.Fatalf("ParseMemoryMax(%q) = %d, want %d", s, v, n)
		}
		if v == 0 && n < memoryUnlimitedThreshold {
			t.Fatalf("ParseMemoryMax(%q) = 0 (unlimited) for finite %d: a loosened limit", s, n)
		}
	})
}

func FuzzParseSandboxCmdline(f *testing.F) {
	f.Add(cmdline(prodSandboxArgs...))
	f.Add(cmdline(localSandboxArgs...))
	f.Add(cmdline("runsc-sandbox", "boot", "--total-memory", "5", "id"))
	f.Add(cmdline("runsc-sandbox", "boot", "-cpu-num=-1", "id"))
	f.Add(cmdline("runsc-sandbox", "boot", "--total-memory"))
	f.Add(cmdline("runsc-gofer", "gofer", "--bundle=/b"))
	f.Add("")
	f.Add("\x00\x00boot\x00--=\x00-\x00--\x00")
	f.Fuzz(func(t *testing.T, s string) {
		sf, err := ParseSandboxCmdline(strings.NewReader(s))
		args := strings.Split(strings.TrimRight(s, "\x00"), "\x00")
		if err != nil {
			if errors.Is(err, ErrNotSandbox) {
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseSandboxCmdline(%q) error = %v (%T), want ErrNotSandbox or a *ParseError", s, err, err)
			}
			return
		}
		boot := -1
		for i, a := range args {
			if a == "boot" {
				boot = i
				break
			}
		}
		if boot < 1 {
			t.Fatalf("ParseSandboxCmdline(%q) = %+v, nil without a boot subcommand", s, sf)
		}
		after := strings.Join(args[boot+1:], "\x00")
		if sf.TotalMemory != 0 && !strings.Contains(after, "total-memory") {
			t.Fatalf("ParseSandboxCmdline(%q).TotalMemory = %d without the flag", s, sf.TotalMemory)
		}
		// The id is the last argument, and not a flag unless "--" ended
		// the flags before it.
		_, _, _, isFlag := flagName(sf.ContainerID)
		if sf.ContainerID != "" && (sf.ContainerID != args[len(args)-1] || isFlag && !slices.Contains(args[boot+1:], "--")) {
			t.Fatalf("ParseSandboxCmdline(%q).ContainerID = %q, want the last, non-flag argument", s, sf.ContainerID)
		}
		// Round trip: the flags we report reproduce themselves.
		re := cmdline("runsc-sandbox", "boot", "--total-memory="+strconv.FormatUint(sf.TotalMemory, 10),
			"--total-host-memory="+strconv.FormatUint(sf.TotalHostMemory, 10), "--cpu-num="+strconv.Itoa(sf.CPUNum),
			"--bundle="+sf.Bundle, "id")
		sf2, err := ParseSandboxCmdline(strings.NewReader(re))
		if err != nil || sf2.TotalMemory != sf.TotalMemory || sf2.TotalHostMemory != sf.TotalHostMemory || sf2.CPUNum != sf.CPUNum {
			t.Fatalf("round trip of %+v = %+v, %v", sf, sf2, err)
		}
	})
}

func FuzzSecureJoin(f *testing.F) {
	for _, s := range []string{"", "/", "..", "../..", "/a/../../..", "escape/x", "in/../escape", "in/x", "a\x00b", "//a//b/"} {
		f.Add(s)
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	writeTree(f, base, map[string]string{"root/real/": "", "outside/": ""})
	if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "escape")); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "in")); err != nil {
		f.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		got, err := SecureJoin(root, rel)
		if err != nil {
			return
		}
		if !Within(realRoot, got) {
			t.Fatalf("SecureJoin(root, %q) = %q, outside %q", rel, got, realRoot)
		}
		if r, err := filepath.EvalSymlinks(got); err == nil && !Within(realRoot, r) {
			t.Fatalf("SecureJoin(root, %q) = %q resolves to %q, outside %q", rel, got, r, realRoot)
		}
	})
}
