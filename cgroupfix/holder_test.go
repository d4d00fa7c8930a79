package cgroupfix

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be a holder, as the guard's binary is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HolderArg {
		RunHolder(os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// TestHolder: a holder lives until Release, which reaps it.
func TestHolder(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := StartHolder(exe)
	if err != nil {
		t.Fatal(err)
	}
	pid := h.PID()
	time.Sleep(50 * time.Millisecond)
	if !alive(pid) {
		t.Fatalf("holder %d exited before Release", pid)
	}
	if err := h.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if alive(pid) {
		t.Errorf("holder %d alive (or unreaped) after Release", pid)
	}
	if err := h.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

// TestHolderStartFails: a missing binary is an error, not a holder.
func TestHolderStartFails(t *testing.T) {
	if _, err := StartHolder("/nonexistent/runsc-guard"); err == nil {
		t.Fatal("StartHolder of a missing binary succeeded")
	}
}
