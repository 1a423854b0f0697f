package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

// subscriberRelay answers as one subscriber would: with err, or after
// hanging until the call's context ends.
type subscriberRelay struct {
	tetherv1connect.UnimplementedEnrollmentServiceHandler
	err   error
	hang  bool
	calls int
}

func (s *subscriberRelay) Enroll(ctx context.Context, _ *connect.Request[tetherv1.EnrollRequest]) (*connect.Response[tetherv1.EnrollResponse], error) {
	return answer[tetherv1.EnrollResponse](ctx, s)
}

func (s *subscriberRelay) Renew(ctx context.Context, _ *connect.Request[tetherv1.RenewRequest]) (*connect.Response[tetherv1.RenewResponse], error) {
	return answer[tetherv1.RenewResponse](ctx, s)
}

func answer[T any](ctx context.Context, s *subscriberRelay) (*connect.Response[T], error) {
	s.calls++
	if s.hang {
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	if s.err != nil {
		return nil, s.err
	}
	return connect.NewResponse(new(T)), nil
}

func TestEnrollmentTriesEverySubscriber(t *testing.T) {
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("subscriber down"))
	tests := []struct {
		name    string
		subs    []*subscriberRelay
		wantErr connect.Code
		calls   []int
	}{
		{"first answers", []*subscriberRelay{{}, {}}, 0, []int{1, 0}},
		{"first down", []*subscriberRelay{{err: unavailable}, {}}, 0, []int{1, 1}},
		{"first frozen", []*subscriberRelay{{hang: true}, {}}, 0, []int{1, 1}},
		{"all down", []*subscriberRelay{{err: unavailable}, {err: unavailable}}, connect.CodeUnavailable, []int{1, 1}},
		// The registry's own answer: another subscriber would relay it too.
		{"refused", []*subscriberRelay{{err: connect.NewError(connect.CodeUnauthenticated, errors.New("used up"))}, {}}, connect.CodeUnauthenticated, []int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clients := make([]tetherv1connect.EnrollmentServiceClient, len(tt.subs))
			for i, s := range tt.subs {
				clients[i] = s
			}
			e, err := NewEnrollment(clients...)
			if err != nil {
				t.Fatal(err)
			}
			e.Attempt = 50 * time.Millisecond
			_, err = e.Renew(context.Background(), connect.NewRequest(&tetherv1.RenewRequest{}))
			if connect.CodeOf(err) != tt.wantErr && !(tt.wantErr == 0 && err == nil) {
				t.Fatalf("err = %v, want code %v", err, tt.wantErr)
			}
			for i, s := range tt.subs {
				if s.calls != tt.calls[i] {
					t.Errorf("subscriber %d called %d times, want %d", i, s.calls, tt.calls[i])
				}
			}
		})
	}
}

// After a subscriber answered, the next call starts there.
func TestEnrollmentRemembersWhoAnswered(t *testing.T) {
	down, up := &subscriberRelay{err: connect.NewError(connect.CodeUnavailable, errors.New("down"))}, &subscriberRelay{}
	e, _ := NewEnrollment(down, up)
	for range 3 {
		if _, err := e.Enroll(context.Background(), connect.NewRequest(&tetherv1.EnrollRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	if down.calls != 1 || up.calls != 3 {
		t.Fatalf("down called %d times, up %d", down.calls, up.calls)
	}
}
