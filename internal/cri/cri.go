// Package cri names the annotations containerd's CRI plugin puts on the
// OCI spec of a pod's containers, which the guard reads to tell a pod's
// sandbox from its other containers and to know the pod.
package cri

// Annotations naming the container and its pod, on every container the CRI
// plugin creates (ContainerType is "sandbox" for the pod sandbox,
// "container" for the others).
const (
	ContainerType          = "io.kubernetes.cri.container-type"
	SandboxID              = "io.kubernetes.cri.sandbox-id"
	SandboxName            = "io.kubernetes.cri.sandbox-name"
	SandboxNamespace       = "io.kubernetes.cri.sandbox-namespace"
	SandboxUID             = "io.kubernetes.cri.sandbox-uid"
	ContainerName          = "io.kubernetes.cri.container-name"
	ContainerTypeSandbox   = "sandbox"
	ContainerTypeContainer = "container"
)

// Annotations sizing the pod, on the sandbox container (containerd 1.6+).
// gVisor does not read them (https://github.com/google/gvisor/issues/13777).
// They sum the limits of the containers that declare one and leave out pod
// overhead, so they are not the pod cgroup's limit: a pod with one
// unlimited container has no pod memory limit but a non-zero
// sandbox-memory.
const (
	SandboxMemory    = "io.kubernetes.cri.sandbox-memory"
	SandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	SandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
)
