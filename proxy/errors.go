package proxy

import "errors"

// Sentinel errors of the shim package, checked with errors.Is.
var (
	// ErrBadStartReply: the runsc shim's start printed something that is not
	// a task API address.
	ErrBadStartReply = errors.New("unusable start reply from runsc shim")
	// ErrUnknownContainer: a task call names a container this guard has no
	// delegate for.
	ErrUnknownContainer = errors.New("container not known to runsc-guard")
)
