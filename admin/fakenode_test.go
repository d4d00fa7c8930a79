package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/runsc-guard/runsc-guard/internal/cri"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-guard/runsc-guard/cgroupfix"
)

// fakeNode is a node's /proc, cgroupfs (v2) and containerd state
// directory under a temporary directory.
type fakeNode struct {
	tb                   testing.TB
	proc, cgroup, state  string
	nextPID              int
	nodeRAM, allocatable uint64
}

const mib = 1 << 20

func newFakeNode(tb testing.TB) *fakeNode {
	tb.Helper()
	root := tb.TempDir()
	n := &fakeNode{
		tb: tb, proc: filepath.Join(root, "proc"), cgroup: filepath.Join(root, "cgroup"), state: filepath.Join(root, "run", "containerd"),
		nextPID: 1000, nodeRAM: 540886331392, allocatable: 500 << 30,
	}
	n.write(filepath.Join(n.cgroup, "cgroup.controllers"), "cpuset cpu io memory pids")
	n.cgroupDir("/kubepods.slice", fmt.Sprint(n.allocatable))
	n.cgroupDir("/kubepods.slice/kubepods-burstable.slice", "max")
	n.cgroupDir("/kubepods.slice/kubepods-besteffort.slice", "max")
	n.cgroupDir("/system.slice/containerd.service", "max")
	n.process([]string{"/sbin/init"}, "/init.scope")
	n.process([]string{"bash", "-c", "ps aux | grep runsc-sandbox"}, "/user.slice")
	return n
}

func (n *fakeNode) write(path, data string) {
	n.tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		n.tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		n.tb.Fatal(err)
	}
}

// cgroupDir creates a cgroup with memory.max (skipped when "").
func (n *fakeNode) cgroupDir(dir, memoryMax string) {
	n.tb.Helper()
	p := filepath.Join(n.cgroup, dir)
	if err := os.MkdirAll(p, 0o755); err != nil {
		n.tb.Fatal(err)
	}
	if memoryMax != "" {
		n.write(filepath.Join(p, "memory.max"), memoryMax+"\n")
	}
}

// process adds a process with a command line and a cgroup v2 path.
func (n *fakeNode) process(argv []string, cgroup string) int {
	n.tb.Helper()
	n.nextPID++
	dir := filepath.Join(n.proc, fmt.Sprint(n.nextPID))
	n.write(filepath.Join(dir, "cmdline"), strings.Join(argv, "\x00")+"\x00")
	n.write(filepath.Join(dir, "cgroup"), "0::"+cgroup+"\n")
	return n.nextPID
}

// bundle writes <state>/io.containerd.runtime.v2.task/k8s.io/<id>/config.json.
func (n *fakeNode) bundle(id, cgroupsPath string, ann map[string]string, rec *cgroupfix.Record, memLimit int64) string {
	n.tb.Helper()
	dir := filepath.Join(n.state, taskDir, "k8s.io", id)
	spec := specs.Spec{Annotations: ann, Linux: &specs.Linux{CgroupsPath: cgroupsPath}}
	if memLimit > 0 {
		spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &memLimit}}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		n.tb.Fatal(err)
	}
	n.write(filepath.Join(dir, "config.json"), string(b))
	if rec != nil {
		b, err := json.Marshal(rec)
		if err != nil {
			n.tb.Fatal(err)
		}
		n.write(filepath.Join(dir, cgroupfix.RecordFile), string(b))
	}
	return dir
}

// fakePod describes a gVisor pod: its sandbox and one app container.
type fakePod struct {
	name, uid string
	qos       string // "burstable" (default) or "besteffort"
	limit     string // pod slice memory.max; "" for "max"
	driver    string // "systemd" (default) or "cgroupfs"
	// totalMemory is what the sandbox booted with; 0 means the pod limit.
	totalMemory uint64
	// sandboxCgroup and appGoferCgroup override where the processes are;
	// "" means the sandbox scope under the pod cgroup.
	sandboxCgroup, appGoferCgroup string
	// rec is the guard's record; nil when the pod ran without the guard.
	rec *cgroupfix.Record
	// noBundleFlag drops --bundle from the sandbox command line (runsc
	// still has --root).
	noBundleFlag bool
	// sandboxMemory is the sandbox's io.kubernetes.cri.sandbox-memory
	// annotation ("": none); appLimit the app container's spec memory
	// limit (0: none).
	sandboxMemory string
	appLimit      int64
	// leafLimit is the sandbox scope's memory.max ("": max).
	leafLimit string
}

// ids returns the sandbox and app container ids of a pod.
func (p fakePod) ids() (sandbox, app string) {
	s := sha256.Sum256([]byte("sandbox/" + p.uid))
	a := sha256.Sum256([]byte("app/" + p.uid))
	return hex.EncodeToString(s[:]), hex.EncodeToString(a[:])
}

// add creates the pod's cgroups, bundles and runsc processes, and returns
// the sandbox container id and the pod cgroup.
func (n *fakeNode) add(p fakePod) (id, podCgroup string) {
	n.tb.Helper()
	qos := p.qos
	if qos == "" {
		qos = "burstable"
	}
	id, app := p.ids()
	uid := strings.ReplaceAll(p.uid, "-", "_")
	var cgroupsPath, appPath, leaf string
	if p.driver == "cgroupfs" {
		podCgroup = "/kubepods/" + qos + "/pod" + p.uid
		n.cgroupDir("/kubepods", fmt.Sprint(n.allocatable))
		n.cgroupDir("/kubepods/"+qos, "max")
		cgroupsPath, appPath, leaf = podCgroup+"/"+id, podCgroup+"/"+app, podCgroup+"/"+id
	} else {
		slice := "kubepods-" + qos + "-pod" + uid + ".slice"
		podCgroup = "/kubepods.slice/kubepods-" + qos + ".slice/" + slice
		cgroupsPath, appPath = slice+":cri-containerd:"+id, slice+":cri-containerd:"+app
		leaf = podCgroup + "/cri-containerd-" + id + ".scope"
	}
	limit := p.limit
	if limit == "" {
		limit = "max"
	}
	n.cgroupDir(podCgroup, limit)
	leafLimit := p.leafLimit
	if leafLimit == "" {
		leafLimit = "max"
	}
	n.cgroupDir(leaf, leafLimit)
	ann := map[string]string{
		"io.kubernetes.cri.container-type": "sandbox",
		cri.SandboxID:                      id,
		cri.SandboxName:                    p.name,
		cri.SandboxNamespace:               "default",
		cri.SandboxUID:                     p.uid,
	}
	if p.sandboxMemory != "" {
		ann[cri.SandboxMemory] = p.sandboxMemory
	}
	n.bundle(id, cgroupsPath, ann, p.rec, 0)
	n.bundle(app, appPath, map[string]string{"io.kubernetes.cri.container-type": "container", cri.SandboxID: id, cri.ContainerName: "app"}, nil, p.appLimit)
	// Command lines name the host's bundles; the audit maps them into
	// its --state-dir.
	bundle := "/run/containerd/" + taskDir + "/k8s.io/" + id
	appBundle := "/run/containerd/" + taskDir + "/k8s.io/" + app

	total := p.totalMemory
	if total == 0 {
		total = n.nodeRAM
		if p.limit != "" {
			fmt.Sscan(p.limit, &total)
		}
	}
	sandboxCg, appGoferCg := p.sandboxCgroup, p.appGoferCgroup
	if sandboxCg == "" {
		sandboxCg = leaf
	}
	if appGoferCg == "" {
		appGoferCg = sandboxCg
	}
	argv := []string{"runsc-sandbox", "--root=/run/containerd/runsc/k8s.io", "--log-format=json", "boot", "--apply-caps=false"}
	if !p.noBundleFlag {
		argv = append(argv, "--bundle="+bundle)
	}
	argv = append(argv, "--controller-fd=10", "--cpu-num=96", fmt.Sprintf("--total-memory=%d", total), "--product-name=AS", "-4124GS-TNR", id)
	n.process(argv, sandboxCg)
	n.process([]string{"runsc-gofer", "--root=/run/containerd/runsc/k8s.io", "gofer", "--bundle", bundle, "--io-fds=5,6"}, sandboxCg)
	n.process([]string{"runsc-gofer", "--root=/run/containerd/runsc/k8s.io", "gofer", "--bundle=" + appBundle, "--io-fds=5"}, appGoferCg)
	return id, podCgroup
}

func (n *fakeNode) options() AuditOptions {
	return AuditOptions{ProcRoot: n.proc, CgroupRoot: n.cgroup, StateDir: n.state}
}
