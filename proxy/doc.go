// Package proxy is the containerd shim v2 "io.containerd.runsc-guard.v1"
// as a process: the shim actions (start, delete, the guard's own serve),
// the ttrpc task service that forwards every call to the runsc shim owning
// the container, and the files and sockets that tie containerd, the guard
// and the runsc shims together. It knows nothing of cgroups: the one call
// it lets something else change is Create (and Start after it), through a
// CreateHook that main wires in (sandboxfix's).
//
// The start and delete actions run gVisor's runsc shim
// (containerd-shim-runsc-v1) with the same arguments, environment, stdin
// and working directory. One guard process serves a whole pod (grouped by
// the io.kubernetes.cri.sandbox-id annotation), on one socket per
// container, whether or not the runsc shim groups containers itself.
// Every call passes through with its request, response, error code and
// ttrpc metadata intact.
package proxy
