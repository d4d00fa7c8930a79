//go:build !unix

package cgroupfix

// oNoFollow is 0 where O_NOFOLLOW does not exist; the guard only runs on
// Linux, this keeps the package building elsewhere.
const oNoFollow = 0
