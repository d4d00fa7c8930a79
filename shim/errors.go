package shim

import "errors"

// Sentinel errors of the shim package, checked with errors.Is.
var (
	// ErrBadStartReply: the runsc shim's start printed something that is not
	// a task API address.
	ErrBadStartReply = errors.New("unusable start reply from runsc shim")
	// ErrUnknownContainer: a task call names a container this guard has no
	// delegate for.
	ErrUnknownContainer = errors.New("container not known to runsc-guard")
	// ErrDelegateIsGuard: the configured runsc shim path resolves to the
	// guard itself, which would recurse forever.
	ErrDelegateIsGuard = errors.New("shim_path points at runsc-guard itself")
	// ErrBadConfig: the guard's configuration file is invalid.
	ErrBadConfig = errors.New("invalid runsc-guard configuration")
)
