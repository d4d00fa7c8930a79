// Package cgroupfix is what runsc-guard knows of cgroups and where
// processes sit in them: it parses a container's linux.cgroupsPath in both
// the cgroupfs form ("/kubepods/burstable/pod<uid>/<id>") and the systemd
// form ("slice:prefix:name"), resolves the limit the kernel would enforce
// on the pod (the minimum over the leaf, every ancestor and the OCI spec),
// computes idempotent edits to the sandbox spec, finds runsc's sandbox and
// gofer processes in /proc and their cgroups, moves processes into a
// cgroup (a cgroupfs write, or a transient systemd scope), and defines the
// Record of what the guard found and did, which audit reads back.
//
// Nothing here imports containerd, and every function that touches the
// filesystem takes the cgroupfs root or the /proc root as a parameter, so the
// package tests on fake trees under t.TempDir() with no root privileges and
// no systemd. systemd is reached only through the narrow [Systemd] interface.
//
// Background: runsc sizes its sandbox (--total-memory, --cpu-num) from the
// leaf cgroup only before release-20231106.0
// (https://github.com/google/gvisor/issues/9580), and without its
// systemd-cgroup flag treats a systemd cgroupsPath as a relative directory
// under system.slice, outside the pod slice
// (https://github.com/google/gvisor/issues/193,
// https://github.com/google/gvisor/issues/10264,
// https://github.com/google/gvisor/issues/13777).
package cgroupfix
