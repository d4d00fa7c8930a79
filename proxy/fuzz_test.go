package proxy

import (
	"strings"
	"testing"
)

// FuzzParseStartReply: whatever a runsc shim prints, the guard either
// refuses it or hands containerd a single-line unix:// address.
func FuzzParseStartReply(f *testing.F) {
	for _, s := range []string{
		"unix:///run/containerd/s/abc",
		`{"version":2,"address":"unix:///run/containerd/s/abc","protocol":"ttrpc"}`,
		`{"version":3,"address":"unix:///x","protocol":"ttrpc"}`,
		`{"address":"unix:///x\n{"}`, "", "{", "unix://", "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseStartReply(in)
		if err != nil {
			return
		}
		got := r.Address
		if !strings.HasPrefix(got, "unix://") || len(got) == len("unix://") || strings.ContainsAny(got, "\n\x00") {
			t.Fatalf("ParseStartReply(%q) = %q: not a single unix:// address", in, got)
		}
	})
}

// FuzzParseFlags: no command line makes the flag parser panic, and an
// accepted one keeps its arguments verbatim for the runsc shim.
func FuzzParseFlags(f *testing.F) {
	f.Add("-namespace\x00k8s.io\x00-address\x00/run/containerd/containerd.sock\x00-publish-binary\x00/usr/bin/containerd\x00-id\x00abc\x00start")
	f.Add("-id\x00abc\x00-bundle\x00/b\x00delete")
	f.Add("-v")
	f.Add("-info\x00-namespace")
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		got, err := ParseFlags(args)
		if err != nil {
			return
		}
		if strings.Join(got.Args, "\x00") != line {
			t.Fatalf("ParseFlags(%q).Args = %q, want the arguments verbatim", args, got.Args)
		}
	})
}
