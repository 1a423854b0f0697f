package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

// Enrollment reaches agent-registry's EnrollmentService through any of the
// subscribers: each call tries them in turn, starting after the one that
// last answered, so a subscriber that is down or frozen costs a credential
// renewal one attempt's time, never the credential.
type Enrollment struct {
	clients []tetherv1connect.EnrollmentServiceClient
	// Attempt bounds each subscriber's try (default 3 s: a subscriber
	// answers at once or is not there, and a renewal must not outlast the
	// credential).
	Attempt time.Duration
	next    atomic.Int32
}

// NewEnrollment returns an Enrollment over clients, one per subscriber.
func NewEnrollment(clients ...tetherv1connect.EnrollmentServiceClient) (*Enrollment, error) {
	if len(clients) == 0 {
		return nil, errors.New("agent: enrollment needs a subscriber")
	}
	return &Enrollment{clients: clients, Attempt: 3 * time.Second}, nil
}

func (e *Enrollment) Enroll(ctx context.Context, req *connect.Request[tetherv1.EnrollRequest]) (*connect.Response[tetherv1.EnrollResponse], error) {
	return each(ctx, e, func(ctx context.Context, c tetherv1connect.EnrollmentServiceClient) (*connect.Response[tetherv1.EnrollResponse], error) {
		return c.Enroll(ctx, req)
	})
}

func (e *Enrollment) Renew(ctx context.Context, req *connect.Request[tetherv1.RenewRequest]) (*connect.Response[tetherv1.RenewResponse], error) {
	return each(ctx, e, func(ctx context.Context, c tetherv1connect.EnrollmentServiceClient) (*connect.Response[tetherv1.RenewResponse], error) {
		return c.Renew(ctx, req)
	})
}

// each calls fn on the subscribers in turn until one answers. An answer
// that is the registry's own (the token refused, the cluster gone) is
// final: another subscriber would relay the same.
func each[T any](ctx context.Context, e *Enrollment, fn func(context.Context, tetherv1connect.EnrollmentServiceClient) (*connect.Response[T], error)) (*connect.Response[T], error) {
	start := int(e.next.Load())
	var err error
	for i := range e.clients {
		k := (start + i) % len(e.clients)
		actx, cancel := context.WithTimeout(ctx, e.Attempt)
		var resp *connect.Response[T]
		resp, err = fn(actx, e.clients[k])
		cancel()
		if err == nil {
			e.next.Store(int32(k))
			return resp, nil
		}
		if ctx.Err() != nil || final(err) {
			return nil, err
		}
	}
	return nil, err
}

// final: an error that another subscriber would relay unchanged.
func final(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodeAlreadyExists:
		return true
	}
	return false
}
