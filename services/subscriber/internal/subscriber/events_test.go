package subscriber

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// fakeEvents records what a subscriber stores; lost and storeErrs script
// what goes wrong.
type fakeEvents struct {
	mu        sync.Mutex
	lost      bool
	storeErrs int
	// leaseErrs fails the leases after the first this many times.
	leaseErrs int
	leased    int
	leases    [][]string
	stored    []*tetherv1.AgentEvent
}

func (f *fakeEvents) Report(*tetherv1.AgentEvent) {}

func (f *fakeEvents) TakeLost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	lost := f.lost
	f.lost = false
	return lost
}

func (f *fakeEvents) Store(_ context.Context, evs []*tetherv1.AgentEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.storeErrs > 0 {
		f.storeErrs--
		return errors.New("no JetStream")
	}
	f.stored = append(f.stored, evs...)
	return nil
}

func (f *fakeEvents) Lease(_ context.Context, l *tetherv1.SubscriberLease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leased++
	if f.leased > 1 && f.leaseErrs > 0 {
		f.leaseErrs--
		return errors.New("no JetStream")
	}
	if n := len(f.leases); n == 0 || !slices.Equal(f.leases[n-1], l.GetIncarnations()) {
		f.leases = append(f.leases, l.GetIncarnations())
	}
	return nil
}

func (f *fakeEvents) snapshot() ([][]string, []*tetherv1.AgentEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leases), slices.Clone(f.stored)
}

// testServer is a Server with two welcomed streams and one not yet
// welcomed, reporting to events.
func testServer(events Events) *Server {
	s := &Server{cfg: Config{ID: "sub-0", Events: events, Now: time.Now}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), sessions: map[string]*session{}}
	first := "first"
	s.incarnation.Store(&first)
	for _, id := range []string{"s1", "s2", "s3"} {
		sess := &session{id: id, cluster: "c-" + id, hello: make(chan struct{}), done: make(chan struct{}), announced: &tetherv1.AgentConnected{AgentVersion: "v1"}}
		if id != "s3" {
			close(sess.hello)
		}
		s.sessions[id] = sess
	}
	return s
}

// A lost report makes the subscriber announce its welcomed streams under
// a new incarnation, with a lease naming both meanwhile, and then only the
// new one; a failed announcement keeps both named until one succeeds.
func TestVouchAnnouncesAgainAfterALostReport(t *testing.T) {
	tests := []struct {
		name      string
		storeErrs int
	}{
		{"announced at once", 0},
		{"announced at the third try", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := &fakeEvents{lost: true, storeErrs: tt.storeErrs}
			s := testServer(events)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); s.Vouch(ctx, 10*time.Millisecond, time.Hour) }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				leases, _ := events.snapshot()
				if n := len(leases); n > 0 && len(leases[n-1]) == 1 && leases[n-1][0] != "first" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("leases %v", leases)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done
			leases, stored := events.snapshot()
			next := *s.incarnation.Load()
			// One new incarnation, named with the first until its
			// announcement is stored: the first's streams were never
			// unvouched.
			if len(leases) != 2 || !slices.Equal(leases[0], []string{next, "first"}) {
				t.Fatalf("leases %v", leases)
			}
			if !slices.Equal(leases[len(leases)-1], []string{next}) {
				t.Fatalf("last lease %v, incarnation %s", leases[len(leases)-1], next)
			}
			if len(stored) != 2 {
				t.Fatalf("stored %v, want the two welcomed streams", stored)
			}
			for _, ev := range stored {
				if ev.GetSubscriberIncarnation() != next || ev.GetConnected().GetAgentVersion() != "v1" || ev.GetSessionId() == "s3" {
					t.Fatalf("announced %v", ev)
				}
			}
		})
	}
}

// A lease unrenewed for more than two intervals (a subscriber frozen, or
// cut off from NATS) may have had its streams swept: once it can, the
// subscriber announces them again under a new incarnation.
func TestVouchAnnouncesAgainAfterALapse(t *testing.T) {
	events := &fakeEvents{leaseErrs: 3}
	s := testServer(events)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.Vouch(ctx, 10*time.Millisecond, time.Hour) }()
	for {
		if _, stored := events.snapshot(); len(stored) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the streams were not announced again after the lapse")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	leases, _ := events.snapshot()
	if len(leases) < 2 || !slices.Equal(leases[0], []string{"first"}) || leases[len(leases)-1][0] == "first" {
		t.Fatalf("leases %v", leases)
	}
}

// Without anything lost, the lease is renewed under the same incarnation
// and nothing is announced.
func TestVouchRenewsTheLease(t *testing.T) {
	events := &fakeEvents{}
	s := testServer(events)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Vouch(ctx, 10*time.Millisecond, time.Hour)
	leases, stored := events.snapshot()
	if len(leases) != 1 || !slices.Equal(leases[0], []string{"first"}) || len(stored) != 0 {
		t.Fatalf("leases %v, stored %v", leases, stored)
	}
}
