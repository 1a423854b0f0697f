package clusters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/tether-dev/tether/lib/backoff"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Follower keeps a projection up to date with the stream.
type Follower struct {
	js  jetstream.JetStream
	p   *Projection
	log *slog.Logger
	// caughtUp is set once the projection holds every event that was in
	// the stream when following began.
	caughtUp atomic.Bool
}

// NewFollower validates its arguments; Run follows.
func NewFollower(js jetstream.JetStream, p *Projection, log *slog.Logger) (*Follower, error) {
	if js == nil || p == nil || log == nil {
		return nil, errors.New("clusters: a JetStream context, a projection and a logger are required")
	}
	return &Follower{js: js, p: p, log: log}, nil
}

// Run applies the stream's events to the projection, from where it stands,
// until ctx ends. Whatever breaks (the stream not created yet, NATS away),
// it starts again after a jittered backoff from the last event applied: an
// ordered consumer delivers each event once, in order.
func (f *Follower) Run(ctx context.Context) {
	bo := &backoff.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Factor: 2}
	for ctx.Err() == nil {
		began := time.Now()
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Minute {
			bo.Reset() // it had been working: this is a new outage
		}
		f.log.Warn("following cluster events; starting again", "err", err)
		if !bo.Sleep(ctx) {
			return
		}
	}
}

func (f *Follower) follow(ctx context.Context) error {
	stream, err := f.js.Stream(ctx, Stream)
	if err != nil {
		return fmt.Errorf("finding stream %s: %w", Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", Stream, err)
	}
	target := info.State.LastSeq
	if f.p.Applied() >= target {
		f.caughtUp.Store(true)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{Subjects},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    f.p.Applied() + 1,
	})
	if err != nil {
		return fmt.Errorf("consuming stream %s: %w", Stream, err)
	}
	// Heartbeats every second: a NATS node lost under the consumer is
	// noticed in two, and the ordered consumer starts again elsewhere.
	it, err := cons.Messages(jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("consuming stream %s: %w", Stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("event metadata: %w", err)
		}
		var ev tetherv1.ClusterEvent
		if err := proto.Unmarshal(msg.Data(), &ev); err != nil {
			// Nothing else writes here (NATS permissions), so this is a
			// bug, not an attack; skipping keeps every follower alike.
			f.log.Error("undecodable cluster event skipped", "seq", meta.Sequence.Stream, "err", err)
			ev.Reset()
		}
		if err := f.p.Apply(meta.Sequence.Stream, &ev); err != nil {
			if errors.Is(err, ErrOutOfOrder) {
				continue // redelivered after a restart of the consumer
			}
			f.log.Warn("cluster event skipped", "seq", meta.Sequence.Stream, "err", err)
		}
		if meta.Sequence.Stream >= target {
			f.caughtUp.Store(true)
		}
	}
}

// Ready is nil once the projection holds every event that was in the
// stream when following began: before that, a cluster could look absent
// only because its creation was not read yet.
func (f *Follower) Ready(context.Context) error {
	if !f.caughtUp.Load() {
		return fmt.Errorf("clusters: catching up with stream %s (applied %d)", Stream, f.p.Applied())
	}
	return nil
}

// Sync waits until the projection holds every event in the stream now:
// what a writer wrote before calling it, it reads after.
func (f *Follower) Sync(ctx context.Context) error {
	stream, err := f.js.Stream(ctx, Stream)
	if err != nil {
		return fmt.Errorf("clusters: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("clusters: %w", err)
	}
	return f.p.WaitApplied(ctx, info.State.LastSeq)
}

// Start follows the stream into a new projection until ctx ends; onChange
// funcs see every change from the first event on.
func Start(ctx context.Context, js jetstream.JetStream, log *slog.Logger, onChange ...func(Change)) (*Projection, *Follower, error) {
	p := NewProjection()
	for _, f := range onChange {
		p.OnChange(f)
	}
	f, err := NewFollower(js, p, log)
	if err != nil {
		return nil, nil, err
	}
	go f.Run(ctx)
	return p, f, nil
}
