package shim

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
)

// CreateHook sees every Create the guard forwards.
//
// BeforeCreate runs before the runsc shim gets the request; it may edit the
// request and the bundle. An error fails the Create and nothing is created.
// The returned AfterCreate (nil when there is nothing to check) runs once the
// runsc shim created the container and before containerd may Start it; an
// error from it makes the guard kill and delete the container and fail the
// Create.
type CreateHook interface {
	BeforeCreate(ctx context.Context, req *taskAPI.CreateTaskRequest) (AfterCreate, error)
}

// AfterCreate checks (and may repair) a container the runsc shim created.
type AfterCreate func(ctx context.Context, resp *taskAPI.CreateTaskResponse) error

// StartHook is a CreateHook that also checks containers after the runsc
// shim started them (not execs). An error makes the guard kill and delete
// the container and fail the Start.
type StartHook interface {
	AfterStart(ctx context.Context, id, bundle string) error
}
