//go:build unix

package cgroupfix

import "syscall"

// oNoFollow makes opening a control file that is a symlink fail: cgroupfs
// has none, and a fake tree must not redirect a read or write outside root.
const oNoFollow = syscall.O_NOFOLLOW
