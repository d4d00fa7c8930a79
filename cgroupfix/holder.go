package cgroupfix

import (
	"fmt"
	"io"
	"os/exec"
	"time"
)

// HolderArg, as the first argument of the guard's binary, makes it a
// holder (RunHolder): the process a transient scope is started with.
const HolderArg = "runsc-guard-scope-holder"

// HolderMaxLife bounds a holder whose parent neither releases it nor dies.
const HolderMaxLife = 10 * time.Minute

// RunHolder is a holder's whole life: it returns when stdin reaches EOF
// (its parent released it, or died) or after HolderMaxLife.
func RunHolder(stdin io.Reader) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(HolderMaxLife):
	}
}

// Holder is a child process that keeps a transient scope alive until the
// processes it was made for have joined it: systemd refuses a scope
// without a process and stops one whose cgroup empties.
type Holder struct {
	cmd     *exec.Cmd
	release io.Closer
	done    chan error
}

// StartHolder starts exe (the guard's own binary) as a holder.
func StartHolder(exe string) (*Holder, error) {
	cmd := exec.Command(exe, HolderArg)
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start scope holder: %w", err)
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start scope holder %s: %w", exe, err)
	}
	h := &Holder{cmd: cmd, release: w, done: make(chan error, 1)}
	go func() { h.done <- cmd.Wait() }()
	return h, nil
}

// PID is the holder's process id.
func (h *Holder) PID() int { return h.cmd.Process.Pid }

// holderExitWait bounds Release's wait before it kills the holder.
const holderExitWait = 5 * time.Second

// Release ends the holder and reaps it. It is safe to call more than
// once.
func (h *Holder) Release() error {
	if h == nil || h.release == nil {
		return nil
	}
	h.release.Close()
	h.release = nil
	select {
	case err := <-h.done:
		return holderExit(err)
	case <-time.After(holderExitWait):
		_ = h.cmd.Process.Kill()
		<-h.done
		return fmt.Errorf("scope holder %d did not exit on release: killed", h.PID())
	}
}

func holderExit(err error) error {
	if err != nil {
		return fmt.Errorf("scope holder: %w", err)
	}
	return nil
}
