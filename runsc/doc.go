// Package runsc knows the runsc binary and its shim's options: the global
// flags set in the [runsc_config] table of the runsc shim's TOML options,
// runsc's release dates and the fixes each carries, and probes of a runsc
// binary for what it accepts.
package runsc
