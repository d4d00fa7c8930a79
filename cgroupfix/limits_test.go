package cgroupfix

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestParseMemoryMax(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint64
		err      error // nil, or a cause checked with errors.Is
	}{
		{"v2 max", "max\n", 0, nil},
		{"v2 limit", "268435456\n", mib256, nil},
		{"no newline", "268435456", mib256, nil},
		{"surrounding space", "  4096 \n", 4096, nil},
		{"v1 unlimited 4k pages", v1Unlimited + "\n", 0, nil},
		{"v1 unlimited 64k pages", "9223372036854710272\n", 0, nil},
		{"2^62 is unlimited", strconv.FormatUint(1<<62, 10), 0, nil},
		{"just below 2^62", strconv.FormatUint(1<<62-1, 10), 1<<62 - 1, nil},
		{"uint64 max", strconv.FormatUint(math.MaxUint64, 10), 0, nil},
		{"overflow", "18446744073709551616", 0, strconv.ErrRange},
		{"negative", "-1", 0, ErrNegative},
		{"negative big", "-268435456", 0, ErrNegative},
		{"zero", "0\n", 0, ErrZeroLimit},
		{"garbage", "lots\n", 0, strconv.ErrSyntax},
		{"empty", "", 0, strconv.ErrSyntax},
		{"newline only", "\n", 0, strconv.ErrSyntax},
		{"two values", "1 2", 0, strconv.ErrSyntax},
		{"plus sign", "+5", 0, strconv.ErrSyntax},
		{"hex", "0x10", 0, strconv.ErrSyntax},
		{"suffix", "256M", 0, strconv.ErrSyntax},
		{"MAX upper case", "MAX", 0, strconv.ErrSyntax},
		{"float", "1.5", 0, strconv.ErrSyntax},
		{"too long", "1" + strings.Repeat(" ", 5000), 0, errTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMemoryMax(strings.NewReader(tt.in))
			if tt.err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) || !errors.Is(err, tt.err) {
					t.Fatalf("ParseMemoryMax(%q) = %v, %v, want *ParseError wrapping %v", tt.in, got, err, tt.err)
				}
				if len(pe.Value) > maxErrValue+3 {
					t.Errorf("ParseMemoryMax(%q): ParseError.Value has %d bytes, want <= %d", tt.in, len(pe.Value), maxErrValue+3)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseMemoryMax(%q) = %v, %v, want %v, nil", tt.in, got, err, tt.want)
			}
		})
	}
	t.Run("read error", func(t *testing.T) {
		if _, err := ParseMemoryMax(errReader{}); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ParseMemoryMax(failing reader) error = %v, want %v", err, io.ErrUnexpectedEOF)
		}
	})
}

func TestParseCPUMax(t *testing.T) {
	tests := []struct {
		name, in   string
		wantQuota  int64
		wantPeriod uint64
		err        error
	}{
		{"unlimited", "max 100000\n", -1, 100000, nil},
		{"half cpu", "50000 100000\n", 50000, 100000, nil},
		{"other period", "25000 50000", 25000, 50000, nil},
		{"lone max", "max", -1, DefaultCPUPeriod, nil},
		{"lone quota", "200000", 200000, DefaultCPUPeriod, nil},
		{"zero period", "50000 0", 0, 0, ErrZeroLimit},
		{"zero quota", "0 100000", 0, 0, ErrZeroLimit},
		{"negative quota", "-5 100000", 0, 0, ErrNegative},
		{"negative period", "5 -100000", 0, 0, ErrNegative},
		{"quota overflows int64", "9223372036854775808 100000", 0, 0, strconv.ErrRange},
		{"period overflows", "5 18446744073709551616", 0, 0, strconv.ErrRange},
		{"garbage", "fast 100000", 0, 0, strconv.ErrSyntax},
		{"three fields", "1 2 3", 0, 0, strconv.ErrSyntax},
		{"empty", "", 0, 0, strconv.ErrSyntax},
		{"max period garbage", "max x", 0, 0, strconv.ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, p, err := ParseCPUMax(strings.NewReader(tt.in))
			if tt.err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) || !errors.Is(err, tt.err) {
					t.Fatalf("ParseCPUMax(%q) = %v, %v, %v, want *ParseError wrapping %v", tt.in, q, p, err, tt.err)
				}
				return
			}
			if err != nil || q != tt.wantQuota || p != tt.wantPeriod {
				t.Errorf("ParseCPUMax(%q) = %v, %v, %v, want %v, %v, nil", tt.in, q, p, err, tt.wantQuota, tt.wantPeriod)
			}
		})
	}
}

func TestParseCPUV1(t *testing.T) {
	quota := []struct {
		in   string
		want int64
		err  error
	}{
		{"-1\n", -1, nil},
		{"50000\n", 50000, nil},
		{"-2", 0, ErrNegative},
		{"0", 0, ErrZeroLimit},
		{"9223372036854775808", 0, strconv.ErrRange},
		{"x", 0, strconv.ErrSyntax},
	}
	for _, tt := range quota {
		t.Run("quota "+tt.in, func(t *testing.T) {
			got, err := ParseCPUQuotaV1(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Errorf("ParseCPUQuotaV1(%q) = %v, %v, want %v, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
	period := []struct {
		in   string
		want uint64
		err  error
	}{
		{"100000\n", 100000, nil},
		{"0", 0, ErrZeroLimit},
		{"-1", 0, ErrNegative},
		{"", 0, strconv.ErrSyntax},
	}
	for _, tt := range period {
		t.Run("period "+tt.in, func(t *testing.T) {
			got, err := ParseCPUPeriodV1(strings.NewReader(tt.in))
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Errorf("ParseCPUPeriodV1(%q) = %v, %v, want %v, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestLimitsHelpers(t *testing.T) {
	tests := []struct {
		name     string
		l        Limits
		mem, cpu bool
		cpus     float64
		cpuCount int
	}{
		{"zero is unlimited", Limits{}, false, false, 0, 0},
		{"memory only", Limits{MemoryBytes: mib256}, true, false, 0, 0},
		{"100m cpu", Limits{CPUQuota: 10000, CPUPeriod: 100000}, false, true, 0.1, 1},
		{"1.5 cpu", Limits{CPUQuota: 150000, CPUPeriod: 100000}, false, true, 1.5, 2},
		{"exactly 2", Limits{CPUQuota: 200000, CPUPeriod: 100000}, false, true, 2, 2},
		{"default period", Limits{CPUQuota: 300000}, false, true, 3, 3},
		{"quota -1", Limits{CPUQuota: -1, CPUPeriod: 100000}, false, false, 0, 0},
		{"huge quota tiny period", Limits{CPUQuota: math.MaxInt64, CPUPeriod: 1}, false, true, math.MaxInt64, math.MaxInt32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.MemoryLimited(); got != tt.mem {
				t.Errorf("%+v.MemoryLimited() = %v, want %v", tt.l, got, tt.mem)
			}
			if got := tt.l.CPULimited(); got != tt.cpu {
				t.Errorf("%+v.CPULimited() = %v, want %v", tt.l, got, tt.cpu)
			}
			if got := tt.l.CPUs(); got != tt.cpus {
				t.Errorf("%+v.CPUs() = %v, want %v", tt.l, got, tt.cpus)
			}
			if got := tt.l.CPUCount(); got != tt.cpuCount {
				t.Errorf("%+v.CPUCount() = %v, want %v", tt.l, got, tt.cpuCount)
			}
		})
	}
}

func TestCPULess(t *testing.T) {
	tests := []struct {
		name string
		a, b Limits
		want bool
	}{
		{"lower ratio, different periods", Limits{CPUQuota: 25000, CPUPeriod: 50000 * 2}, Limits{CPUQuota: 50000, CPUPeriod: 100000}, true},
		{"equal ratio", Limits{CPUQuota: 50000, CPUPeriod: 100000}, Limits{CPUQuota: 25000, CPUPeriod: 50000}, false},
		{"unlimited never lower", Limits{}, Limits{CPUQuota: 1, CPUPeriod: 1}, false},
		{"anything beats unlimited", Limits{CPUQuota: math.MaxInt64, CPUPeriod: 1}, Limits{}, true},
		{"no overflow", Limits{CPUQuota: math.MaxInt64, CPUPeriod: math.MaxUint64}, Limits{CPUQuota: math.MaxInt64 - 1, CPUPeriod: math.MaxUint64}, false},
		{"no overflow other way", Limits{CPUQuota: math.MaxInt64 - 1, CPUPeriod: math.MaxUint64}, Limits{CPUQuota: math.MaxInt64, CPUPeriod: math.MaxUint64}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cpuLess(tt.a, tt.b); got != tt.want {
				t.Errorf("cpuLess(%+v, %+v) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestDetectVersion(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Version
		err   error
	}{
		{"v2", map[string]string{"cgroup.controllers": "cpu memory\n"}, V2, nil},
		{"v1", map[string]string{"memory/": "", "cpu,cpuacct/": ""}, V1, nil},
		{"hybrid is v1", map[string]string{"memory/": "", "unified/cgroup.controllers": ""}, V1, nil},
		{"memory is a file", map[string]string{"memory": ""}, 0, ErrUnknownHierarchy},
		{"empty", map[string]string{"x/": ""}, 0, ErrUnknownHierarchy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			got, err := DetectVersion(root)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Errorf("DetectVersion(%q) = %v, %v, want %v, %v", root, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestReadLimits(t *testing.T) {
	tests := []struct {
		name    string
		version Version
		files   map[string]string
		dir     string
		want    Limits
		wantErr error
	}{
		{
			name: "v2 pod slice", version: V2,
			files: v2Cgroup("kubepods.slice/pod.slice", "268435456", "50000 100000"),
			dir:   "/kubepods.slice/pod.slice",
			want:  Limits{MemoryBytes: mib256, CPUQuota: 50000, CPUPeriod: 100000},
		},
		{
			name: "v2 max everywhere", version: V2,
			files: v2Cgroup("a", "max", "max 100000"),
			dir:   "/a",
			want:  Limits{},
		},
		{
			name: "v2 missing files are unlimited", version: V2,
			files: map[string]string{"a/": ""}, dir: "/a", want: Limits{},
		},
		{
			name: "missing dir is unlimited", version: V2,
			files: map[string]string{"a/": ""}, dir: "/nope", want: Limits{},
		},
		{
			name: "v2 garbage memory", version: V2,
			files: v2Cgroup("a", "lots", "max 100000"), dir: "/a", wantErr: strconv.ErrSyntax,
		},
		{
			name: "v2 garbage cpu", version: V2,
			files: v2Cgroup("a", "max", "-3 100000"), dir: "/a", wantErr: ErrNegative,
		},
		{
			name: "v1 limited", version: V1,
			files: map[string]string{
				"memory/kubepods/burstable/pod1/memory.limit_in_bytes":  "268435456\n",
				"cpu,cpuacct/kubepods/burstable/pod1/cpu.cfs_quota_us":  "20000\n",
				"cpu,cpuacct/kubepods/burstable/pod1/cpu.cfs_period_us": "100000\n",
			},
			dir:  "/kubepods/burstable/pod1",
			want: Limits{MemoryBytes: mib256, CPUQuota: 20000, CPUPeriod: 100000},
		},
		{
			name: "v1 unlimited", version: V1,
			files: map[string]string{
				"memory/kubepods/memory.limit_in_bytes":  v1Unlimited + "\n",
				"cpu,cpuacct/kubepods/cpu.cfs_quota_us":  "-1\n",
				"cpu,cpuacct/kubepods/cpu.cfs_period_us": "100000\n",
			},
			dir:  "/kubepods",
			want: Limits{},
		},
		{
			name: "v1 cpu mount named cpu", version: V1,
			files: map[string]string{
				"memory/a/":              "",
				"cpu/a/cpu.cfs_quota_us": "150000\n",
			},
			dir:  "/a",
			want: Limits{CPUQuota: 150000, CPUPeriod: DefaultCPUPeriod},
		},
		{
			name: "v1 overflow", version: V1,
			files: map[string]string{"memory/a/memory.limit_in_bytes": "99999999999999999999\n"},
			dir:   "/a", wantErr: strconv.ErrRange,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			h := Hierarchy{Root: root, Version: tt.version}
			got, err := h.ReadLimits(tt.dir)
			if tt.wantErr != nil {
				var pe *ParseError
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &pe) || !strings.HasPrefix(pe.File, root) {
					t.Fatalf("ReadLimits(%q) = %+v, %v, want *ParseError with the full path wrapping %v", tt.dir, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadLimits(%q) error = %v", tt.dir, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadLimits(%q) mismatch (-want +got):\n%s", tt.dir, diff)
			}
		})
	}

	t.Run("unreadable file is an error", func(t *testing.T) {
		root := t.TempDir()
		// A directory where the file should be: open works, read fails.
		writeTree(t, root, map[string]string{"a/memory.max/": ""})
		h := Hierarchy{Root: root, Version: V2}
		if got, err := h.ReadLimits("/a"); err == nil {
			t.Errorf("ReadLimits(%q) = %+v, nil, want an error", "/a", got)
		}
	})
	t.Run("unknown version", func(t *testing.T) {
		h := Hierarchy{Root: t.TempDir()}
		if _, err := h.ReadLimits("/a"); !errors.Is(err, ErrUnknownHierarchy) {
			t.Errorf("ReadLimits with Version 0 error = %v, want %v", err, ErrUnknownHierarchy)
		}
	})
	t.Run("symlinked dir outside root", func(t *testing.T) {
		base := t.TempDir()
		writeTree(t, base, map[string]string{"out/memory.max": "max\n", "root/cgroup.controllers": ""})
		if err := os.Symlink(filepath.Join(base, "out"), filepath.Join(base, "root", "evil")); err != nil {
			t.Fatal(err)
		}
		h := Hierarchy{Root: filepath.Join(base, "root"), Version: V2}
		if _, err := h.ReadLimits("/evil"); !errors.Is(err, ErrPathEscape) {
			t.Errorf("ReadLimits(%q) error = %v, want %v", "/evil", err, ErrPathEscape)
		}
	})
}
