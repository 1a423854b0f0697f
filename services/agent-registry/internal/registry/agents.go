package registry

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/subject"
)

// The agent events subscribers report, and their projection: for each
// cluster, its agent's streams, history and connect count, in a KV bucket.
const (
	AgentsStream  = "AGENTS"
	AgentsBucket  = "AGENTS_STATE"
	agentsDurable = "agent-registry"
	// agentsMaxBytes bounds the stream whatever happens to the fleet; at
	// about 150 bytes an event it holds millions of connects.
	agentsMaxBytes = 1 << 30
	// workers apply events concurrently, each cluster's on one of them,
	// in order; inFlight bounds what the consumer hands out unacked.
	workers  = 16
	inFlight = 1024
)

// AgentsStreamConfig is the stream of agent events: connects and ends,
// not heartbeats (ADR 014). It keeps a week, in which every open stream
// is announced again, so the projection is rebuilt from what is there.
func AgentsStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: AgentsStream, Description: "Tether agent stream events (connected, disconnected)",
		Subjects: []string{subject.AgentEventsAll}, Storage: jetstream.FileStorage, Replicas: replicas,
		MaxAge: 7 * 24 * time.Hour, MaxBytes: agentsMaxBytes, MaxMsgSize: 4 << 10, Discard: jetstream.DiscardOld,
		// Sweeps from several registry replicas are stored once.
		Duplicates: 2 * time.Minute,
	}
}

// AgentViewConfig configures StartAgentView.
type AgentViewConfig struct {
	JS       jetstream.JetStream
	Replicas int
	// Timeout is how long a subscriber's lease lasts unrenewed before its
	// streams count as dead and are swept.
	Timeout time.Duration
	Logger  *slog.Logger
	Now     func() time.Time
}

// AgentView projects the agent events into the bucket, and keeps in
// memory what it needs to answer without reading it: every cluster's
// streams (the read model) and the subscribers' leases.
type AgentView struct {
	cfg    AgentViewConfig
	kv     jetstream.KeyValue
	cons   jetstream.Consumer
	leases *leases
	seed   maphash.Seed

	// passes counts the sweeps that looked at the whole read model.
	passes atomic.Int64

	mu sync.RWMutex
	// model holds each cluster's entry with only its latest history event
	// (which says since when it is disconnected).
	model  map[string]*tetherv1.AgentStatus
	loaded bool
	// groups index model for the metric (gauge.go).
	groups groups
}

// StartAgentView creates the streams and the bucket if missing, consumes
// the events, follows the bucket and the leases, and sweeps the streams of
// dead subscriber incarnations, until ctx ends. A missing bucket is
// rebuilt: the durable consumer starts again from the first event.
func StartAgentView(ctx context.Context, cfg AgentViewConfig) (*AgentView, error) {
	if cfg.JS == nil || cfg.Logger == nil || cfg.Timeout <= 0 || cfg.Replicas < 1 {
		return nil, errors.New("agent view: JetStream, a logger, a positive timeout and replicas are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	js := cfg.JS
	stream, err := js.CreateOrUpdateStream(ctx, AgentsStreamConfig(cfg.Replicas))
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", AgentsStream, err)
	}
	kv, err := js.KeyValue(ctx, AgentsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		// Nothing projected: replay everything.
		if err := stream.DeleteConsumer(ctx, agentsDurable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("resetting the agent events consumer: %w", err)
		}
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AgentsBucket, Description: "agent-registry's projection of AGENTS", Replicas: cfg.Replicas, Storage: jetstream.FileStorage})
	}
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", AgentsBucket, err)
	}
	// Many events in flight, shared by all registry replicas: one lost
	// ack holds back only its own event. Order within a cluster is kept
	// by its worker here, and the fold tolerates the rest.
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: agentsDurable, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: inFlight,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", AgentsStream, err)
	}
	v := &AgentView{cfg: cfg, kv: kv, cons: cons, leases: newLeases(cfg.Timeout, cfg.Logger), seed: maphash.MakeSeed(), model: map[string]*tetherv1.AgentStatus{}, groups: newGroups()}
	if err := v.leases.follow(ctx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	watch, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching bucket %s: %w", AgentsBucket, err)
	}
	go v.readModel(ctx, watch)
	queues := make([]chan jetstream.Msg, workers)
	for i := range queues {
		queues[i] = make(chan jetstream.Msg, inFlight/workers)
		go v.work(ctx, queues[i])
	}
	// Short pulls with heartbeats: when the consumer's leader moves (a
	// NATS node lost), a pull that went to the old one is noticed missing
	// within two seconds and sent again, instead of half a minute.
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		select {
		case queues[maphash.String(v.seed, msg.Subject())%workers] <- msg:
		case <-ctx.Done():
		}
	}, jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", AgentsStream, err)
	}
	context.AfterFunc(ctx, cc.Stop)
	go v.sweeper(ctx)
	return v, nil
}

func (v *AgentView) work(ctx context.Context, queue <-chan jetstream.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-queue:
			v.handle(ctx, msg)
		}
	}
}

func (v *AgentView) handle(ctx context.Context, msg jetstream.Msg) {
	var ev tetherv1.AgentEvent
	if err := proto.Unmarshal(msg.Data(), &ev); err != nil || !subject.ValidClusterID(ev.GetClusterId()) {
		v.cfg.Logger.Error("undecodable agent event dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	// A revision that moved between read and write is tried again at
	// once: another registry replica wrote the entry, or, on a NATS
	// cluster, the read came from a replica a moment behind (KV reads are
	// direct).
	var err error
	for range 5 {
		if err = v.apply(ctx, &ev); err == nil || !wrongRevision(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		v.cfg.Logger.Warn("projecting an agent event; it comes again", "cluster_id", ev.GetClusterId(), "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// wrongRevision: a KV write that expected a revision the entry no longer
// has.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// apply folds one event into the cluster's entry, with the entry's
// revision expected, so a concurrent writer makes this one retry. An
// event that changes nothing writes nothing.
func (v *AgentView) apply(ctx context.Context, ev *tetherv1.AgentEvent) error {
	st := &tetherv1.AgentStatus{}
	var rev uint64
	entry, err := v.kv.Get(ctx, ev.GetClusterId())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return err
	default:
		if err := proto.Unmarshal(entry.Value(), st); err != nil {
			return fmt.Errorf("decoding the entry: %w", err)
		}
		rev = entry.Revision()
	}
	before := proto.Clone(st)
	Fold(st, ev)
	if rev != 0 && proto.Equal(before, st) {
		return nil
	}
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = v.kv.Create(ctx, ev.GetClusterId(), b)
	} else {
		_, err = v.kv.Update(ctx, ev.GetClusterId(), b, rev)
	}
	return err
}

// readModel keeps the bucket's entries in memory, as they change.
func (v *AgentView) readModel(ctx context.Context, w jetstream.KeyWatcher) {
	defer w.Stop()
	for {
		var entry jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return
		case entry = <-w.Updates():
		}
		if entry == nil {
			// The bucket as it stood is read: sweep what died meanwhile.
			v.mu.Lock()
			v.loaded = true
			v.mu.Unlock()
			v.leases.askSweep()
			continue
		}
		if entry.Operation() != jetstream.KeyValuePut {
			v.put(entry.Key(), nil)
			continue
		}
		st := &tetherv1.AgentStatus{}
		if err := proto.Unmarshal(entry.Value(), st); err != nil {
			v.cfg.Logger.Error("undecodable agent entry", "cluster_id", entry.Key(), "err", err)
			continue
		}
		if n := len(st.History); n > 1 {
			st.History = st.History[n-1:]
		}
		v.put(entry.Key(), st)
	}
}

// put keeps st as cluster's entry in the read model; nil removes it.
func (v *AgentView) put(cluster string, st *tetherv1.AgentStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.groups.remove(cluster, v.model[cluster])
	if st == nil {
		delete(v.model, cluster)
		return
	}
	v.model[cluster] = st
	v.groups.add(cluster, st)
}

// sweeper ends, as events, the streams of subscriber incarnations that
// died: when a lease expires or stops naming one, and once the bucket is
// read. Every registry replica sweeps; JetStream keeps one of each event.
func (v *AgentView) sweeper(ctx context.Context) {
	t := time.NewTicker(max(v.cfg.Timeout/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.leases.expire(v.cfg.Now())
			continue
		case <-v.leases.sweep:
		}
		if err := v.sweep(ctx); err != nil && ctx.Err() == nil {
			v.cfg.Logger.Warn("sweeping the streams of dead subscribers; trying again", "err", err)
			time.AfterFunc(time.Second, v.leases.askSweep)
		}
	}
}

func (v *AgentView) sweep(ctx context.Context) error {
	now := v.cfg.Now()
	var dead []*tetherv1.AgentEvent
	// Both must be read first: a lease not yet read would make its
	// subscriber's streams look dead.
	if !v.leases.isLoaded() {
		return nil
	}
	v.mu.RLock()
	if !v.loaded {
		v.mu.RUnlock()
		return nil
	}
	v.passes.Add(1)
	for cluster, st := range v.model {
		for _, s := range st.GetStreams() {
			if v.leases.dead(s, now) {
				dead = append(dead, &tetherv1.AgentEvent{ClusterId: cluster, SessionId: s.GetSessionId(), SubscriberId: s.GetSubscriberId(),
					SubscriberIncarnation: s.GetSubscriberIncarnation(), TimeUnixNano: now.UnixNano(),
					Kind: &tetherv1.AgentEvent_Disconnected{Disconnected: &tetherv1.AgentDisconnected{
						Reason: "its subscriber's lease ran out", StreamIncarnation: s.GetSubscriberIncarnation()}}})
			}
		}
	}
	v.mu.RUnlock()
	if len(dead) == 0 {
		return nil
	}
	v.cfg.Logger.Info("sweeping the streams of dead subscriber incarnations", "streams", len(dead))
	msgs := make([]*nats.Msg, 0, len(dead))
	for _, ev := range dead {
		subj, _ := subject.AgentEvents(ev.GetClusterId())
		b, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: subj, Data: b, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, "sweep."+ev.GetSessionId()+"."+ev.GetSubscriberIncarnation())
		msgs = append(msgs, msg)
	}
	return natsconn.StoreAll(ctx, v.cfg.JS, msgs)
}

// Status returns a cluster's agent as the read model has it, described
// at now, or nil if no agent ever reported. It may trail the bucket by a
// moment.
func (v *AgentView) Status(cluster string, now time.Time) *tetherv1.AgentStatus {
	v.mu.RLock()
	st, ok := v.model[cluster]
	if ok {
		st = proto.Clone(st).(*tetherv1.AgentStatus)
	}
	v.mu.RUnlock()
	if !ok {
		return nil
	}
	v.Describe(st, now)
	return st
}

// Describe fills in st's state at now, since when, and when each of its
// streams was last vouched for.
func (v *AgentView) Describe(st *tetherv1.AgentStatus, now time.Time) {
	describe(st, now, v.cfg.Timeout, v.leases.alive)
}

// Ready reports whether the view can tell live streams from dead ones:
// the bucket and the leases as they stood are read.
func (v *AgentView) Ready(context.Context) error {
	v.mu.RLock()
	loaded := v.loaded
	v.mu.RUnlock()
	if !loaded || !v.leases.isLoaded() {
		return errors.New("reading the agents' projection and the subscribers' leases")
	}
	return nil
}

// CaughtUp reports whether every event in the stream was projected and
// the read model has read the bucket.
func (v *AgentView) CaughtUp(ctx context.Context) (bool, error) {
	info, err := v.cons.Info(ctx)
	if err != nil {
		return false, err
	}
	v.mu.RLock()
	loaded := v.loaded
	v.mu.RUnlock()
	return loaded && info.NumPending == 0 && info.NumAckPending == 0, nil
}

// state is st's state at now, without changing st.
func (v *AgentView) state(st *tetherv1.AgentStatus, now time.Time) tetherv1.AgentState {
	if len(st.GetStreams()) == 0 {
		return tetherv1.AgentState_AGENT_STATE_DISCONNECTED
	}
	for _, s := range st.GetStreams() {
		if ok, _ := v.leases.alive(s, now); ok {
			return tetherv1.AgentState_AGENT_STATE_CONNECTED
		}
	}
	return tetherv1.AgentState_AGENT_STATE_UNHEALTHY
}
