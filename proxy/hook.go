package proxy

import (
	"context"

	"github.com/runsc-guard/runsc-guard/internal/config"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
)

// CreateHook sees every Create the guard forwards.
//
// BeforeCreate runs before the runsc shim gets the request; it may edit the
// request and the bundle. An error fails the Create and nothing is created.
// The returned func (nil when there is nothing to check) checks, and may
// repair, the container once the runsc shim created it and before
// containerd may Start it; an error from it makes the guard kill and delete
// the container and fail the Create. When the runsc shim's Create fails,
// it is called with a nil response, to undo what BeforeCreate prepared; its
// error is then ignored. (An unnamed func type, so that a hook
// needs no import of this package to implement the interface.)
type CreateHook interface {
	BeforeCreate(ctx context.Context, req *taskAPI.CreateTaskRequest) (func(context.Context, *taskAPI.CreateTaskResponse) error, error)
}

// NewHook builds the CreateHook of a guard server from the guard's
// configuration; main passes sandboxfix's.
type NewHook func(cfg config.Config) CreateHook

// StartHook is a CreateHook that also checks containers after the runsc
// shim started them (not execs). An error makes the guard kill and delete
// the container and fail the Start.
type StartHook interface {
	AfterStart(ctx context.Context, id, bundle string) error
}

// FollowHook is a CreateHook that also follows a pod's resources after its
// Create (in-place resize). The router calls Follow, with the container
// the call named, after forwarding each Update, whatever the runsc shim
// answered; the server calls it with every container it serves on an
// interval (ServerOptions.FollowEvery). containers maps ids to bundles.
// It must not block for long and reports nothing: the Update's answer is
// the runsc shim's.
type FollowHook interface {
	Follow(ctx context.Context, containers map[string]string)
}
