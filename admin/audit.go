package admin

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"github.com/runsc-guard/runsc-guard/internal/ocispec"
	"github.com/runsc-guard/runsc-guard/internal/safefile"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
	"github.com/runsc-guard/runsc-guard/internal/atomicfile"
)

// Verdicts of the audit.
const (
	// VerdictOK: the pod has a memory limit, the sandbox booted within it
	// and every runsc process of the pod is inside the pod cgroup.
	VerdictOK = "OK"
	// VerdictUnlimited: kubelet set no pod memory limit (a BestEffort pod,
	// or a container without a limit), and the sandbox is inside the pod
	// cgroup, so the node's own limits apply as for any such pod.
	VerdictUnlimited = "UNLIMITED"
	// VerdictAtRisk: the pod's memory limit does not hold, or cannot be
	// told to hold.
	VerdictAtRisk = "AT-RISK"
	// VerdictWarn: the pod's limit holds, but the sandbox no longer
	// matches it: the pod was resized after the sandbox booted (gVisor
	// keeps its boot size), or a cgroup below the pod holds a tighter
	// limit than the pod's (a resize nothing followed).
	VerdictWarn = "WARN"
)

// taskDir is the directory of containerd's shim v2 bundles in its state
// directory: <state>/io.containerd.runtime.v2.task/<namespace>/<id>.
const taskDir = "io.containerd.runtime.v2.task"

// AuditOptions are the roots the audit reads.
type AuditOptions struct {
	ProcRoot   string
	CgroupRoot string
	// StateDir is containerd's state directory (its bundles are under
	// StateDir/io.containerd.runtime.v2.task).
	StateDir string
	// UseAnnotation resolves the limit with the guard's
	// use_sandbox_annotations setting.
	UseAnnotation bool
}

// Placement is where one runsc process of a pod is.
type Placement struct {
	PID    int    `json:"pid"`
	Role   string `json:"role"` // runsc-sandbox or runsc-gofer
	Cgroup string `json:"cgroup"`
	// Controllers are, on cgroup v1, its cgroups in the cpu and pids
	// hierarchies (Cgroup is the memory one).
	Controllers map[string]string `json:"controllers,omitempty"`
	// Container is the container the process serves (gofers serve one
	// container each).
	Container string `json:"container"`
	InPod     bool   `json:"in_pod"`
}

// outsideCgroup names where p is outside pod: its memory cgroup, or the
// first other v1 hierarchy's ("pids:/system.slice/...").
func outsideCgroup(p cgroupfix.Proc, pod string) string {
	if !cgroupfix.Within(pod, p.Cgroup) {
		return p.Cgroup
	}
	for _, c := range slices.Sorted(maps.Keys(p.Controllers)) {
		if !cgroupfix.Within(pod, p.Controllers[c]) {
			return c + ":" + p.Controllers[c]
		}
	}
	return p.Cgroup
}

// SandboxReport is the audit of one gVisor sandbox (one pod).
type SandboxReport struct {
	PodNamespace string `json:"pod_namespace"`
	PodName      string `json:"pod_name"`
	PodUID       string `json:"pod_uid"`
	ContainerID  string `json:"container_id"`
	PID          int    `json:"pid"`
	Bundle       string `json:"bundle"`
	CgroupsPath  string `json:"cgroups_path"`
	PodCgroup    string `json:"pod_cgroup"`
	// PodLimit is the memory limit on the pod cgroup, its sandbox leaf or
	// the sandbox spec (0: none). EffectiveLimit also counts the ancestors
	// above the pod (kubepods.slice: node allocatable).
	PodLimit       uint64 `json:"pod_limit_bytes"`
	EffectiveLimit uint64 `json:"effective_limit_bytes"`
	// PodCPUs is the pod's CPU quota in CPUs (0: none).
	PodCPUs float64 `json:"pod_cpus"`
	// TotalMemory and CPUNum are what the sandbox booted with.
	TotalMemory uint64      `json:"total_memory_bytes"`
	CPUNum      int         `json:"cpu_num"`
	Placement   []Placement `json:"placement"`
	// Guarded: the guard wrote its record into the bundle.
	Guarded      bool     `json:"guarded"`
	GuardActions []string `json:"guard_actions,omitempty"`
	GuardOutcome string   `json:"guard_outcome,omitempty"`
	// BootLimit is the pod limit the guard sized the sandbox by at Create
	// (its record), ResizedLimit the pod's limit the guard last followed
	// after a resize (0: none).
	BootLimit    uint64   `json:"boot_limit_bytes,omitempty"`
	ResizedLimit uint64   `json:"resized_limit_bytes,omitempty"`
	Verdict      string   `json:"verdict"`
	Reasons      []string `json:"reasons,omitempty"`
	// Warnings say why a sandbox is WARN.
	Warnings []string `json:"warnings,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// bundleDir maps a bundle path written on a runsc command line to the
// bundle under opts.StateDir, so the audit can run with the host's state
// directory mounted elsewhere (a DaemonSet's /host/run/containerd). The
// namespace comes from the bundle path, or else from runsc's --root
// (/run/containerd/runsc/<namespace>).
func (o AuditOptions) bundleDir(cmdBundle, root, id string) string {
	ns := ""
	if cmdBundle != "" && filepath.Base(cmdBundle) == id {
		ns = filepath.Base(filepath.Dir(cmdBundle))
	} else if root != "" {
		ns = filepath.Base(root)
	}
	if ns == "" || ns == "." || ns == "/" || id == "" || strings.ContainsAny(id, "/\x00") || id == ".." {
		return cmdBundle
	}
	return filepath.Join(o.StateDir, taskDir, ns, id)
}

// RunAudit audits every gVisor sandbox under opts' roots. The slice is
// sorted by pod namespace, pod name and container id.
func RunAudit(opts AuditOptions) ([]SandboxReport, error) {
	version, err := cgroupfix.DetectVersion(opts.CgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("audit: detect cgroup version of %s: %w", opts.CgroupRoot, err)
	}
	// Opened once for all sandboxes; when that fails, each sandbox's
	// Resolve reports why as its AT-RISK reason.
	h := cgroupfix.Hierarchy{Root: opts.CgroupRoot, Version: version}
	if opened, closeH, err := h.Open(); err == nil {
		h = opened
		defer closeH()
	}
	h = h.Snapshot() // pods share their ancestors' limits: read once
	procs, err := cgroupfix.ScanRunsc(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// Each gofer serves one container; an app container's gofer belongs
	// to the pod named by its io.kubernetes.cri.sandbox-id annotation.
	var sandboxes []cgroupfix.RunscProc
	pods := map[string]*podProcs{} // sandbox id -> its gofers and containers
	pod := func(sid string) *podProcs {
		if pods[sid] == nil {
			pods[sid] = &podProcs{}
		}
		return pods[sid]
	}
	read := specReader{}
	for _, p := range procs {
		if p.IsSandbox() {
			sandboxes = append(sandboxes, p)
			continue
		}
		id := filepath.Base(p.Bundle)
		sid := id
		sp, err := read.spec(opts.bundleDir(p.Bundle, "", id))
		if err == nil && sp.Annotations[cri.SandboxID] != "" {
			sid = sp.Annotations[cri.SandboxID]
		}
		pp := pod(sid)
		pp.gofers = append(pp.gofers, p)
		if err == nil && sp.Annotations[cri.ContainerType] == cri.ContainerTypeContainer {
			pp.containers++
			if specMemoryLimit(sp) == 0 {
				pp.unlimited = append(pp.unlimited, sp.Annotations[cri.ContainerName])
			}
		}
	}
	reports := make([]SandboxReport, 0, len(sandboxes))
	for _, s := range sandboxes {
		reports = append(reports, auditOne(h, opts, s, pod(s.Sandbox.ContainerID), read))
	}
	slices.SortFunc(reports, func(a, b SandboxReport) int {
		return cmp.Or(strings.Compare(a.PodNamespace, b.PodNamespace), strings.Compare(a.PodName, b.PodName),
			strings.Compare(a.ContainerID, b.ContainerID))
	})
	return reports, nil
}

// podProcs is what the audit found of one pod besides its sandbox: the
// gofers (one per container) and, from their bundles, its app containers
// and the names of those that declare no memory limit.
type podProcs struct {
	gofers     []cgroupfix.RunscProc
	containers int
	unlimited  []string
}

// specMemoryLimit is a spec's linux.resources.memory.limit (0: none).
func specMemoryLimit(s *specs.Spec) int64 {
	if s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Memory == nil || s.Linux.Resources.Memory.Limit == nil {
		return 0
	}
	return max(*s.Linux.Resources.Memory.Limit, 0)
}

// specReader reads each bundle's spec once per audit: a pod's sandbox
// bundle is read for its gofer and for the sandbox.
type specReader map[string]specRead

type specRead struct {
	s   *specs.Spec
	err error
}

func (r specReader) spec(bundle string) (*specs.Spec, error) {
	if c, ok := r[bundle]; ok {
		return c.s, c.err
	}
	s, err := ocispec.Read(bundle)
	r[bundle] = specRead{s, err}
	return s, err
}

func auditOne(h cgroupfix.Hierarchy, opts AuditOptions, s cgroupfix.RunscProc, pod *podProcs, read specReader) SandboxReport {
	gofers := pod.gofers
	id := s.Sandbox.ContainerID
	r := SandboxReport{
		ContainerID: id, PID: s.PID,
		TotalMemory: s.Sandbox.TotalMemory, CPUNum: s.Sandbox.CPUNum,
		Bundle: opts.bundleDir(s.Bundle, s.Root, id),
	}
	atRisk := func(format string, a ...any) { r.Reasons = append(r.Reasons, fmt.Sprintf(format, a...)) }

	rec := r.readRecord()
	spec, err := read.spec(r.Bundle)
	if err != nil {
		atRisk("pod limit unreadable: read sandbox spec: %v", err)
	} else {
		r.PodNamespace = spec.Annotations[cri.SandboxNamespace]
		r.PodName = spec.Annotations[cri.SandboxName]
		r.PodUID = spec.Annotations[cri.SandboxUID]
		if spec.Linux != nil {
			r.CgroupsPath = spec.Linux.CgroupsPath
		}
	}
	limitKnown := false
	if err == nil && r.CgroupsPath == "" {
		r.Notes = append(r.Notes, "no linux.cgroupsPath: the pod has no cgroup of its own")
	} else if err == nil {
		// The spec's limits are what runsc applied to the cgroup it
		// made at Create: once the sandbox runs, that cgroup tells what
		// holds (a resize leaves the spec behind).
		res, err := cgroupfix.Resolve(h, cgroupfix.ResolveInput{
			CgroupsPath: r.CgroupsPath, Annotations: spec.Annotations, UseAnnotation: opts.UseAnnotation,
		})
		if err != nil {
			atRisk("pod limit unreadable: %v", err)
		} else {
			limitKnown = true
			r.PodCgroup = res.PodCgroup
			r.EffectiveLimit = res.Effective.MemoryBytes
			r.PodCPUs = res.Effective.CPUs()
			r.PodLimit = podLimit(res)
			r.Notes = append(r.Notes, res.Warnings...)
			if r.PodLimit == 0 && res.Annotation != nil && res.Annotation.MemoryLimited() {
				unlimitedPod(&r, res.Annotation.MemoryBytes, pod, atRisk)
			}
		}
	}

	r.Placement = append(r.Placement, Placement{PID: s.PID, Role: cgroupfix.Argv0Sandbox, Cgroup: s.Cgroup, Controllers: s.Controllers, Container: id})
	for _, g := range gofers {
		r.Placement = append(r.Placement, Placement{PID: g.PID, Role: cgroupfix.Argv0Gofer, Cgroup: g.Cgroup, Controllers: g.Controllers, Container: filepath.Base(g.Bundle)})
	}
	for i := range r.Placement {
		p := &r.Placement[i]
		proc := cgroupfix.Proc{Cgroup: p.Cgroup, Controllers: p.Controllers}
		p.InPod = proc.InPod(r.PodCgroup)
		if r.PodCgroup != "" && !p.InPod {
			// https://github.com/google/gvisor/issues/193 and #10264:
			// without systemd-cgroup, old runsc puts the sandbox under
			// system.slice; even with it, its app-container gofers stay
			// in containerd's cgroup (#2535). On cgroup v1 every runsc
			// takes a systemd cgroupsPath for a directory below its own
			// cgroup (docs/upstream.md#v1).
			atRisk("%s[%d] of %s in %s, outside the pod cgroup %s", p.Role, p.PID, shortID(p.Container), outsideCgroup(proc, r.PodCgroup), r.PodCgroup)
		}
	}
	if rec != nil {
		r.BootLimit = rec.Effective.MemoryBytes
		if rec.Current != nil {
			r.ResizedLimit = rec.Current.MemoryBytes
		}
	}
	// The guard sized it within the pod's limit at Create: a boot size
	// above the limit now is a cut made since (followed yet or not).
	bootedWithin := rec != nil && r.BootLimit > 0 && r.TotalMemory <= r.BootLimit
	switch {
	case !limitKnown || r.PodLimit == 0 || r.TotalMemory == 0:
	case r.TotalMemory > r.EffectiveLimit && bootedWithin:
		// gVisor cannot shrink a running sandbox
		// (https://github.com/google/gvisor/issues/14409): the pod's
		// cgroup holds the lower limit, MemTotal inside still says more.
		r.Warnings = append(r.Warnings, fmt.Sprintf("resized: booted with total-memory %s for the pod limit %s, the pod's limit is now %s",
			formatBytes(r.TotalMemory), formatBytes(r.BootLimit), formatBytes(r.EffectiveLimit)))
	case r.TotalMemory > r.EffectiveLimit:
		// https://github.com/google/gvisor/issues/9580: runsc before
		// release-20231106.0 reads only the leaf and boots with host RAM.
		atRisk("total-memory %s above the pod limit %s", formatBytes(r.TotalMemory), formatBytes(r.EffectiveLimit))
	case r.TotalMemory < r.EffectiveLimit && rec != nil && rec.Current != nil:
		// Raised after boot: the sandbox may use the new limit, its
		// MemTotal stays (google/gvisor#14409).
		r.Warnings = append(r.Warnings, fmt.Sprintf("resized: booted with total-memory %s, the pod's limit is now %s",
			formatBytes(r.TotalMemory), formatBytes(r.EffectiveLimit)))
	case r.TotalMemory < r.EffectiveLimit:
		// Without the guard's record a raise cannot be told from a
		// runsc that capped --total-memory (at host RAM, say).
		r.Notes = append(r.Notes, fmt.Sprintf("total-memory %s below the pod limit %s: resized after boot, or capped by runsc",
			formatBytes(r.TotalMemory), formatBytes(r.EffectiveLimit)))
	}
	if limitKnown && r.PodCgroup != "" && !annotated(rec) {
		r.Warnings = append(r.Warnings, pinnedBelow(h, r.PodCgroup, s.Cgroup)...)
	}
	if limitKnown && r.TotalMemory == 0 {
		r.Notes = append(r.Notes, "no --total-memory on the sandbox command line")
	}
	switch {
	case len(r.Reasons) > 0:
		r.Verdict = VerdictAtRisk
	case len(r.Warnings) > 0:
		r.Verdict = VerdictWarn
	case r.PodLimit == 0:
		r.Verdict = VerdictUnlimited
	default:
		r.Verdict = VerdictOK
	}
	return r
}

// unlimitedPod tells apart the two ways a pod cgroup has no memory limit
// while the CRI sandbox-memory annotation declares one. kubelet sets the
// pod's limit only when every container declares one, and the annotation
// sums only the declared limits: a container without a limit is kubelet's
// intent (UNLIMITED). When every container of the pod declares a limit,
// kubelet made the pod cgroup with it, so a pod cgroup without one was
// made by someone else (runsc or systemd creating a missing pod cgroup):
// AT-RISK. A pod with no container yet cannot be told; it is noted.
func unlimitedPod(r *SandboxReport, declared uint64, pod *podProcs, atRisk func(string, ...any)) {
	switch {
	case len(pod.unlimited) > 0:
		r.Notes = append(r.Notes, fmt.Sprintf("pod cgroup without a memory limit as kubelet makes it: container %s declares none (sandbox-memory %s sums the others)",
			strings.Join(pod.unlimited, ", "), formatBytes(declared)))
	case pod.containers > 0:
		atRisk("pod cgroup %s has no memory limit though each of its %d containers declares one (sandbox-memory %s): kubelet did not make it so",
			r.PodCgroup, pod.containers, formatBytes(declared))
	default:
		r.Notes = append(r.Notes, fmt.Sprintf("pod cgroup without a memory limit, sandbox-memory %s: no container yet to tell whether kubelet meant it", formatBytes(declared)))
	}
}

// readRecord reads the guard's decision record from the bundle; nil when
// there is none or it does not parse.
func (r *SandboxReport) readRecord() *cgroupfix.Record {
	b, err := safefile.ReadFile(filepath.Join(r.Bundle, cgroupfix.RecordFile), cgroupfix.MaxRecordSize)
	if err != nil {
		return nil
	}
	r.Guarded = true
	var rec cgroupfix.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("guard record %s unreadable: %v", cgroupfix.RecordFile, err))
		return nil
	}
	r.GuardActions, r.GuardOutcome = rec.Actions, rec.Outcome
	r.Notes = append(r.Notes, rec.Warnings...)
	return &rec
}

// annotated: the guard took the pod's memory limit from the CRI
// annotation (use_sandbox_annotations, no cgroup limit on the pod) and
// pinned it below the pod on purpose.
func annotated(rec *cgroupfix.Record) bool {
	if rec == nil {
		return false
	}
	for _, s := range rec.Sources {
		if s.Kind == cgroupfix.KindAnnotation && s.Limits.MemoryLimited() {
			return true
		}
	}
	return false
}

// pinnedBelow reports each cgroup between the sandbox's (cg) and the pod
// cgroup that holds a memory limit tighter than the pod's, or one where
// the pod has none: the sandbox is killed there, not at the pod's limit.
// It is what a resize leaves when nothing follows it below the pod (the
// stock runsc shim on a runsc that cannot update, or an old guard).
func pinnedBelow(h cgroupfix.Hierarchy, pod, cg string) []string {
	podLim, err := cgroupfix.PodLimits(h, pod)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range cgroupfix.Below(pod, cg) {
		l, err := h.ReadLimits(d)
		if err != nil || !l.MemoryLimited() || (podLim.MemoryLimited() && l.MemoryBytes >= podLim.MemoryBytes) {
			continue
		}
		pl := "none"
		if podLim.MemoryLimited() {
			pl = formatBytes(podLim.MemoryBytes)
		}
		out = append(out, fmt.Sprintf("%s holds memory limit %s, the pod's is %s: a resize not followed below the pod", d, formatBytes(l.MemoryBytes), pl))
	}
	return out
}

// podLimit is the smallest memory limit at or below the pod cgroup (the pod
// cgroup, the sandbox's leaf, the spec, an applied annotation), ignoring
// ancestors such as kubepods.slice: those hold every pod on the node, not
// this one. 0 when there is none.
func podLimit(res cgroupfix.Resolution) uint64 {
	var lim uint64
	for _, s := range res.Sources {
		if s.Kind == cgroupfix.KindCgroup && !cgroupfix.Within(res.PodCgroup, s.Path) {
			continue
		}
		if m := s.Limits.MemoryBytes; m > 0 && (lim == 0 || m < lim) {
			lim = m
		}
	}
	return lim
}

// Audit is the audit command.
func Audit(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("audit", "[flags]", "Lists every gVisor sandbox on the node with its pod limit, what it booted with,\n"+
		"where its processes are, and a verdict. Exit status 1 when any is "+VerdictAtRisk+".", stderr)
	var opts AuditOptions
	fs.StringVar(&opts.ProcRoot, "proc-root", "/proc", "procfs `dir` to scan for runsc processes")
	fs.StringVar(&opts.CgroupRoot, "cgroup-root", "/sys/fs/cgroup", "cgroupfs `dir`")
	fs.StringVar(&opts.StateDir, "state-dir", "/run/containerd", "containerd's state `dir` (bundles are under "+taskDir+"/<namespace>/<id>)")
	guardConfig := guardConfigFlag(fs, "use_sandbox_annotations")
	jsonOut := fs.Bool("json", false, "print JSON (same as --format=json)")
	format := fs.String("format", "table", "output `format`: table, json or prometheus (node-exporter textfile)")
	output := fs.String("o", "", "write the output to `file` atomically (for the node-exporter textfile collector) instead of stdout")
	if !parseFlags(fs, args) {
		return exitUsage
	}
	if *jsonOut {
		*format = "json"
	}
	if !slices.Contains([]string{"table", "json", "prometheus"}, *format) {
		fmt.Fprintf(stderr, "audit: want --format table, json or prometheus, not %q\n", *format)
		return exitUsage
	}
	cfg, ok := guardConfig()
	if !ok {
		return exitUsage
	}
	opts.UseAnnotation = cfg.UseSandboxAnnotations
	reports, err := RunAudit(opts)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitUsage
	}
	var buf bytes.Buffer
	switch *format {
	case "json":
		err = writeAuditJSON(&buf, reports)
	case "prometheus":
		err = writeAuditPrometheus(&buf, reports)
	default:
		err = writeAuditTable(&buf, reports)
	}
	if err == nil && *output != "" {
		err = atomicfile.Write(*output, buf.Bytes(), 0o644)
	} else if err == nil {
		_, err = stdout.Write(buf.Bytes())
	}
	if err != nil {
		fmt.Fprintf(stderr, "audit: write report: %v\n", err)
		return exitUsage
	}
	for _, r := range reports {
		if r.Verdict == VerdictAtRisk {
			return exitFinding
		}
	}
	return exitOK
}
