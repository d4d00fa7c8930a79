package runsc

// runscConfigTable is the table of the runsc shim's options TOML whose
// string entries become global runsc flags on every runsc call.
const runscConfigTable = "runsc_config"

// SystemdCgroupKey is the runsc flag that makes runsc create the
// sandbox's cgroup through systemd, under the pod slice. runsc has it
// since release-20220321.0 (https://github.com/google/gvisor/pull/7287,
// issue https://github.com/google/gvisor/issues/193); without it a
// systemd cgroupsPath lands in system.slice
// (https://github.com/google/gvisor/issues/10264, minikube 22033).
const SystemdCgroupKey = "systemd-cgroup"

// EnableSystemdCgroup returns the runsc shim options TOML with
// [runsc_config] systemd-cgroup = "true" set, keeping every other key and
// value. It returns the input unchanged, and changed == false, when the
// flag is already the string "true". Empty input is a valid, empty
// document. The output is re-encoded: comments and key order are not kept.
//
// The runsc shim decodes runsc_config as a map of strings, so a boolean
// systemd-cgroup = true (which the shim cannot decode) is rewritten as the
// string "true".
func EnableSystemdCgroup(tomlBody []byte) (out []byte, changed bool, err error) {
	out, keys, err := SetFlags(tomlBody, map[string]string{SystemdCgroupKey: "true"})
	return out, len(keys) > 0, err
}
