package natsconn

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// storeBatch bounds how many messages StoreAll has in flight at once.
const storeBatch = 256

// StoreAll publishes msgs to JetStream and returns once every one is
// stored, a batch at a time, so a burst (a subscriber announcing thousands
// of streams, a registry sweeping a dead subscriber's) neither waits on
// one round trip per message nor floods the server.
func StoreAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	for len(msgs) > 0 {
		n := min(len(msgs), storeBatch)
		futures := make([]jetstream.PubAckFuture, 0, n)
		for _, m := range msgs[:n] {
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				return fmt.Errorf("publishing to %s: %w", m.Subject, err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("storing to %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		msgs = msgs[n:]
	}
	return nil
}
