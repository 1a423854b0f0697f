package subscriber

import (
	"context"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

// EnrollmentRelay serves EnrollmentService to agents by passing each call
// to agent-registry: an agent's only way out is its subscriber endpoint,
// and the signing key stays with the registry, off the internet-facing
// hop.
type EnrollmentRelay struct {
	Registry tetherv1connect.EnrollmentServiceClient
}

func (e EnrollmentRelay) Enroll(ctx context.Context, req *connect.Request[tetherv1.EnrollRequest]) (*connect.Response[tetherv1.EnrollResponse], error) {
	return e.Registry.Enroll(ctx, connect.NewRequest(req.Msg))
}

func (e EnrollmentRelay) Renew(ctx context.Context, req *connect.Request[tetherv1.RenewRequest]) (*connect.Response[tetherv1.RenewResponse], error) {
	return e.Registry.Renew(ctx, connect.NewRequest(req.Msg))
}
