// Package shim is the containerd shim v2 "io.containerd.runsc-guard.v1".
//
// It is a decorator in front of gVisor's runsc shim (containerd-shim-runsc-v1):
// the start and delete actions run the runsc shim with the same arguments,
// environment, stdin and working directory, and the long-running guard
// process serves the ttrpc task API, forwarding every call to the runsc shim
// process that owns the container. One guard process serves a whole pod
// (grouped by the io.kubernetes.cri.sandbox-id annotation), whether or not the
// runsc shim groups containers itself.
//
// The one call the guard changes is Create: a CreateHook sees every Create
// before and after it is forwarded (see hook.go). Everything else passes
// through with its request, response, error code and ttrpc metadata intact.
package shim
