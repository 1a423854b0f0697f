package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// fakeEnrollment issues numbered credentials that live ttl.
type fakeEnrollment struct {
	mu             sync.Mutex
	ttl            time.Duration
	enrolls        int
	renewals       int
	failNext       error
	loseNextEnroll error
	// enrollIDs are the enrollment ids each Enroll carried.
	enrollIDs []string
	// revoked are the credentials of a deleted cluster: never renewed.
	revoked map[string]bool
}

func (f *fakeEnrollment) issue(prefix string, n int) *tetherv1.AgentCredential {
	return &tetherv1.AgentCredential{Token: prefix + string(rune('0'+n)), ExpiresUnix: time.Now().Add(f.ttl).Unix()}
}

func (f *fakeEnrollment) Enroll(_ context.Context, req *connect.Request[tetherv1.EnrollRequest]) (*connect.Response[tetherv1.EnrollResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrollIDs = append(f.enrollIDs, req.Msg.GetEnrollmentId())
	if req.Msg.GetBootstrapToken() != "bt" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("bootstrap token refused"))
	}
	if err := f.loseNextEnroll; err != nil {
		// The answer is lost on its way back.
		f.loseNextEnroll = nil
		return nil, err
	}
	f.enrolls++
	return connect.NewResponse(&tetherv1.EnrollResponse{Credential: f.issue("enrolled-", f.enrolls)}), nil
}

func (f *fakeEnrollment) Renew(_ context.Context, req *connect.Request[tetherv1.RenewRequest]) (*connect.Response[tetherv1.RenewResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return nil, err
	}
	if f.revoked[req.Msg.GetCredential()] {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("credential revoked"))
	}
	f.renewals++
	return connect.NewResponse(&tetherv1.RenewResponse{Credential: f.issue("renewed-", f.renewals)}), nil
}

func newCredentials(t *testing.T, f *fakeEnrollment, bootstrap string) (*Credentials, FileStore) {
	store := FileStore{Path: filepath.Join(t.TempDir(), "credential")}
	return &Credentials{
		ClusterID: "x", Store: store, Enrollment: f,
		Bootstrap: func() (string, error) { return bootstrap, nil },
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, store
}

func TestCredentialsEnrollOnceAndReuse(t *testing.T) {
	ctx := context.Background()
	f := &fakeEnrollment{ttl: time.Hour}
	c, store := newCredentials(t, f, "bt")
	tok, err := c.Token(ctx)
	if err != nil || tok != "enrolled-1" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if fi, err := os.Stat(store.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored credential: %v, %v", fi, err)
	}
	// A restarted agent: the stored credential, no second enrollment.
	again, _ := newCredentials(t, f, "used-up")
	again.Store = store
	if tok, err := again.Token(ctx); err != nil || tok != "enrolled-1" || f.enrolls != 1 {
		t.Fatalf("after restart: %q, %v, %d enrollments", tok, err, f.enrolls)
	}
	// Expired while the cluster was offline: renewed, not re-enrolled.
	stale := Credential{Token: "enrolled-1", Obtained: time.Now().Add(-3 * time.Hour), Expires: time.Now().Add(-2 * time.Hour)}
	if err := store.Save(ctx, stale); err != nil {
		t.Fatal(err)
	}
	offline, _ := newCredentials(t, f, "used-up")
	offline.Store = store
	if tok, err := offline.Token(ctx); err != nil || tok != "renewed-1" || f.enrolls != 1 {
		t.Fatalf("after an outage: %q, %v, %d enrollments", tok, err, f.enrolls)
	}
	// Refused by a subscriber, and revoked as the registry confirms: not
	// offered again; enrollment with a used token fails with a clear error.
	f.revoked = map[string]bool{"renewed-1": true}
	offline.Refused()
	if tok, err := offline.Token(ctx); err == nil {
		t.Fatalf("a revoked credential was offered again: %q", tok)
	}
}

// A subscriber whose view of the clusters lags refuses a credential the
// registry still stands behind. The agent asks the registry rather than
// spend the bootstrap token, which the first enrollment used up.
func TestCredentialsRefusedByALaggingSubscriber(t *testing.T) {
	ctx := context.Background()
	f := &fakeEnrollment{ttl: time.Hour}
	c, store := newCredentials(t, f, "bt")
	if tok, err := c.Token(ctx); err != nil || tok != "enrolled-1" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	c.Bootstrap = func() (string, error) { return "used-up", nil }
	c.Refused()
	tok, err := c.Token(ctx)
	if err != nil || tok != "renewed-1" || f.enrolls != 1 {
		t.Fatalf("after a subscriber's refusal: %q, %v, %d enrollments", tok, err, f.enrolls)
	}
	if stored, err := store.Load(ctx); err != nil || stored.Token != "renewed-1" {
		t.Fatalf("stored %q, %v", stored.Token, err)
	}
	// The one in memory is offered from now on, with no more calls.
	if tok, err := c.Token(ctx); err != nil || tok != "renewed-1" || f.renewals != 1 {
		t.Fatalf("Token again = %q, %v, %d renewals", tok, err, f.renewals)
	}
}

func TestCredentialsRenewBeforeExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := &fakeEnrollment{ttl: 3 * time.Second, failNext: connect.NewError(connect.CodeUnavailable, errors.New("registry away"))}
	c, store := newCredentials(t, f, "bt")
	if _, err := c.Token(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	go c.Renew(ctx, func(tok string) { got <- tok })
	select {
	case tok := <-got:
		// The first attempt failed; the retry came within the life left.
		if tok != "renewed-1" {
			t.Fatalf("renewed to %q", tok)
		}
	case <-ctx.Done():
		t.Fatal("no renewal")
	}
	stored, err := store.Load(ctx)
	if err != nil || stored.Token != "renewed-1" {
		t.Fatalf("stored %q, %v", stored.Token, err)
	}
	if tok, _ := c.Token(ctx); tok != "renewed-1" {
		t.Fatalf("Token after renewal = %q", tok)
	}
}

// Every try of one enrollment carries the same enrollment id, so the
// registry can answer again an agent whose first answer was lost.
func TestCredentialsEnrollWithOneIDAcrossTries(t *testing.T) {
	f := &fakeEnrollment{ttl: time.Hour, loseNextEnroll: connect.NewError(connect.CodeDeadlineExceeded, errors.New("timed out"))}
	c, _ := newCredentials(t, f, "bt")
	if _, err := c.Token(context.Background()); err == nil {
		t.Fatal("the lost answer was not an error")
	}
	if tok, err := c.Token(context.Background()); err != nil || tok != "enrolled-1" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if len(f.enrollIDs) != 2 || f.enrollIDs[0] == "" || f.enrollIDs[0] != f.enrollIDs[1] {
		t.Fatalf("enrollment ids %q", f.enrollIDs)
	}
}
