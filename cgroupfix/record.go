package cgroupfix

import "time"

// RecordFile is the name of the guard's decision record in a bundle, and
// MaxRecordSize the most of one that is read.
const (
	RecordFile    = "runsc-guard.json"
	MaxRecordSize = 1 << 20
)

// Record is what the guard decided for one container, written as JSON next
// to its bundle (RecordFile) for later audit, and logged once.
type Record struct {
	Time          time.Time `json:"time"`
	ContainerID   string    `json:"container_id"`
	ContainerType string    `json:"container_type"`
	PodNamespace  string    `json:"pod_namespace,omitempty"`
	PodName       string    `json:"pod_name,omitempty"`
	PodUID        string    `json:"pod_uid,omitempty"`
	// SandboxID is the pod's sandbox container (an app container's
	// io.kubernetes.cri.sandbox-id).
	SandboxID   string `json:"sandbox_id,omitempty"`
	CgroupsPath string `json:"cgroups_path"`
	// RunscCgroupsPath is the cgroupsPath the guard gave runsc instead
	// (cgroup v1: a directory in the guard's scope under the pod slice).
	RunscCgroupsPath string `json:"runsc_cgroups_path,omitempty"`
	Driver           string `json:"driver,omitempty"`
	PodCgroup        string `json:"pod_cgroup,omitempty"`
	Runsc            string `json:"runsc,omitempty"`
	// Sources are the limits found, leaf first (cgroups, spec, annotation).
	Sources []Source `json:"sources,omitempty"`
	// Annotation holds the CRI sandbox-* annotation values, if any.
	Annotation *Limits `json:"annotation,omitempty"`
	// Effective is the limit the guard made runsc boot with.
	Effective Limits `json:"effective"`
	// SpecLimitBefore and SpecLimitAfter are linux.resources.memory.limit
	// in config.json before and after the guard (0: none).
	SpecLimitBefore uint64 `json:"spec_limit_before"`
	SpecLimitAfter  uint64 `json:"spec_limit_after"`
	// RunscFlags are the [runsc_config] entries the guard added.
	RunscFlags map[string]string `json:"runsc_flags,omitempty"`
	// LeafLimitWritten: the guard wrote the limit into an existing leaf
	// cgroup (cgroupfs driver).
	LeafLimitWritten bool `json:"leaf_limit_written,omitempty"`
	// TotalMemory and CPUNum are what the runsc-sandbox process booted
	// with (0: not seen).
	SandboxPID  int    `json:"sandbox_pid,omitempty"`
	TotalMemory uint64 `json:"total_memory,omitempty"`
	CPUNum      int    `json:"cpu_num,omitempty"`
	// PlacementBefore and PlacementAfter are the runsc processes and
	// their cgroups after runsc created the container, and after a move.
	PlacementBefore []Proc `json:"placement_before,omitempty"`
	PlacementAfter  []Proc `json:"placement_after,omitempty"`
	// Actions lists what the guard changed: "spec-limit", "runsc-flag",
	// "leaf-limit", "scope" (runsc told to create the sandbox's cgroups
	// in a scope the guard started under the pod slice), "move"; empty
	// when nothing was needed.
	Actions []string `json:"actions"`
	// Outcome is "ok", "warn" (policy warn let a problem through) or
	// "refused" (policy enforce failed the Create).
	Outcome  string   `json:"outcome"`
	Warnings []string `json:"warnings,omitempty"`
	Error    string   `json:"error,omitempty"`
	// Current is the pod cgroup's limit the guard last followed after a
	// resize (nil: none seen since Create, Effective still holds).
	Current *Limits `json:"current,omitempty"`
	// Follows are the resizes of the pod the guard followed, oldest
	// first, the last MaxFollows of them.
	Follows []Follow `json:"follows,omitempty"`
}

// MaxFollows is how many resizes a record keeps.
const MaxFollows = 32

// Follow is one resize of a pod the guard followed (sandboxfix.Follow).
type Follow struct {
	Time time.Time `json:"time"`
	// From and To are the pod's limits before and after.
	From Limits `json:"from"`
	To   Limits `json:"to"`
	// Written are the cgroups below the pod the guard gave the new
	// limit ("<dir> memory" or "<dir> cpu", and how: systemd or file).
	Written []string `json:"written,omitempty"`
	// TotalMemory is the --total-memory the sandbox keeps from its boot
	// (gVisor cannot change it, google/gvisor#14409).
	TotalMemory uint64 `json:"total_memory,omitempty"`
	Error       string `json:"error,omitempty"`
}
