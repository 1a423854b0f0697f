package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// The agent events subscribers report, and their projection: for each
// cluster, its agent's streams, history and connect count, in a KV bucket.
const (
	AgentsStream  = "AGENTS"
	AgentsBucket  = "AGENTS_STATE"
	agentsDurable = "agent-registry"
	historyLen    = 20
)

// AgentsStreamConfig is the stream of agent events. Heartbeats make it
// large, so it keeps a week: the projection is rebuilt from what is there.
func AgentsStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: AgentsStream, Description: "Tether agent stream events (connected, disconnected, heartbeat)",
		Subjects: []string{subject.AgentEventsAll}, Storage: jetstream.FileStorage, Replicas: replicas,
		MaxAge: 7 * 24 * time.Hour, MaxMsgSize: 4 << 10, Discard: jetstream.DiscardOld,
	}
}

// AgentView projects the agent events into the bucket.
type AgentView struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	log  *slog.Logger
	cons jetstream.Consumer
}

// StartAgentView creates the stream and the bucket if missing, and
// consumes the events until ctx ends. A missing bucket is rebuilt: the
// durable consumer starts again from the first event in the stream.
func StartAgentView(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*AgentView, error) {
	stream, err := js.CreateOrUpdateStream(ctx, AgentsStreamConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", AgentsStream, err)
	}
	kv, err := js.KeyValue(ctx, AgentsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		// Nothing projected: replay everything.
		if err := stream.DeleteConsumer(ctx, agentsDurable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("resetting the agent events consumer: %w", err)
		}
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AgentsBucket, Description: "agent-registry's projection of AGENTS", Replicas: replicas, Storage: jetstream.FileStorage})
	}
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", AgentsBucket, err)
	}
	// One event at a time, across all registry replicas: events of one
	// cluster stay in order, and the bucket's revisions guard the rest.
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: agentsDurable, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", AgentsStream, err)
	}
	v := &AgentView{js: js, kv: kv, log: log, cons: cons}
	// Short pulls with heartbeats: when the consumer's leader moves (a
	// NATS node lost), a pull that went to the old one is noticed missing
	// within two seconds and sent again, instead of half a minute.
	cc, err := cons.Consume(func(msg jetstream.Msg) { v.handle(ctx, msg) },
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", AgentsStream, err)
	}
	context.AfterFunc(ctx, cc.Stop)
	return v, nil
}

func (v *AgentView) handle(ctx context.Context, msg jetstream.Msg) {
	var ev tetherv1.AgentEvent
	if err := proto.Unmarshal(msg.Data(), &ev); err != nil || !subject.ValidClusterID(ev.GetClusterId()) {
		v.log.Error("undecodable agent event dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	// A revision that moved between read and write is tried again at
	// once: on a NATS cluster the read may come from a replica a moment
	// behind (KV reads are direct), and the consumer holds every other
	// event until this one is acknowledged.
	var err error
	for range 5 {
		if err = v.apply(ctx, &ev); err == nil || !wrongRevision(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		v.log.Warn("projecting an agent event; it comes again", "cluster_id", ev.GetClusterId(), "err", err)
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
// revision expected, so a concurrent writer makes this one retry.
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
	Fold(st, ev)
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

// Fold applies ev to a cluster's projection. It is the whole projection:
// rebuilding is folding the stream again.
func Fold(st *tetherv1.AgentStatus, ev *tetherv1.AgentEvent) {
	at := ev.GetTimeUnixNano() / int64(time.Second)
	find := func() int {
		for i, s := range st.Streams {
			if s.GetSessionId() == ev.GetSessionId() {
				return i
			}
		}
		return -1
	}
	remember := func() {
		st.History = append(st.History, ev)
		if len(st.History) > historyLen {
			st.History = st.History[len(st.History)-historyLen:]
		}
	}
	switch k := ev.GetKind().(type) {
	case *tetherv1.AgentEvent_Connected:
		if find() < 0 {
			st.Streams = append(st.Streams, &tetherv1.AgentStream{SessionId: ev.GetSessionId(), SubscriberId: ev.GetSubscriberId(),
				AgentVersion: k.Connected.GetAgentVersion(), KubernetesVersion: k.Connected.GetKubernetesVersion(),
				ConnectedUnix: at, LastHeartbeatUnix: at})
			st.Connects++
		}
		remember()
	case *tetherv1.AgentEvent_Disconnected:
		// Reported twice at times: by its subscriber, and by the agent
		// once it is connected again (a subscriber that died says
		// nothing). The first one counts.
		if i := find(); i >= 0 {
			st.Streams = append(st.Streams[:i], st.Streams[i+1:]...)
			remember()
		}
	case *tetherv1.AgentEvent_Heartbeat:
		if i := find(); i >= 0 {
			st.Streams[i].LastHeartbeatUnix = at
		} else if !ended(st, ev.GetSessionId()) {
			// Its connect was lost (NATS away at the time): the heartbeat
			// is proof enough of the stream. One that comes after the
			// stream's end (from a subscriber cut off for a while) is not.
			st.Streams = append(st.Streams, &tetherv1.AgentStream{SessionId: ev.GetSessionId(), SubscriberId: ev.GetSubscriberId(), ConnectedUnix: at, LastHeartbeatUnix: at})
		}
	}
}

// ended reports whether the history has session's disconnect.
func ended(st *tetherv1.AgentStatus, session string) bool {
	for _, h := range st.GetHistory() {
		if h.GetSessionId() == session && h.GetDisconnected() != nil {
			return true
		}
	}
	return false
}

// State is the agent's state at now: connected while some stream's
// heartbeat is within timeout, unhealthy while it has streams whose
// heartbeats stopped, disconnected without streams.
func State(st *tetherv1.AgentStatus, now time.Time, timeout time.Duration) tetherv1.AgentState {
	if len(st.GetStreams()) == 0 {
		return tetherv1.AgentState_AGENT_STATE_DISCONNECTED
	}
	for _, s := range st.GetStreams() {
		if fresh(s, now, timeout) {
			return tetherv1.AgentState_AGENT_STATE_CONNECTED
		}
	}
	return tetherv1.AgentState_AGENT_STATE_UNHEALTHY
}

// fresh reports whether a stream's last heartbeat is within timeout of
// now. Heartbeats are kept to the second, rounded down: the heartbeat may
// be up to a second newer than recorded, and is given that second.
func fresh(s *tetherv1.AgentStream, now time.Time, timeout time.Duration) bool {
	return now.Sub(time.Unix(s.GetLastHeartbeatUnix()+1, 0)) <= timeout
}

// Get returns a cluster's projection, or nil if no agent ever reported.
func (v *AgentView) Get(ctx context.Context, cluster string) (*tetherv1.AgentStatus, error) {
	entry, err := v.kv.Get(ctx, cluster)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &tetherv1.AgentStatus{}
	if err := proto.Unmarshal(entry.Value(), st); err != nil {
		return nil, err
	}
	return st, nil
}

// Caught up reports whether every event in the stream was projected.
func (v *AgentView) CaughtUp(ctx context.Context) (bool, error) {
	info, err := v.cons.Info(ctx)
	if err != nil {
		return false, err
	}
	return info.NumPending == 0 && info.NumAckPending == 0, nil
}

// Gauge counts agents by state and subscriber for /metrics, from the
// bucket, each time it is scraped.
func (v *AgentView) Gauge(timeout time.Duration) prometheus.Collector {
	return &agentCollector{v: v, timeout: timeout, desc: prometheus.NewDesc("tether_registry_agents",
		"Clusters' agents by state (connected, unhealthy, disconnected) and the subscriber of their newest stream.", []string{"state", "subscriber"}, nil)}
}

type agentCollector struct {
	v       *AgentView
	timeout time.Duration
	desc    *prometheus.Desc
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := c.v.kv.ListKeys(ctx)
	if err != nil {
		return
	}
	counts := map[[2]string]int{}
	now := time.Now()
	for key := range keys.Keys() {
		st, err := c.v.Get(ctx, key)
		if err != nil || st == nil {
			continue
		}
		sub := "-"
		if n := len(st.GetStreams()); n > 0 {
			sub = st.GetStreams()[n-1].GetSubscriberId()
		}
		counts[[2]string{stateName(State(st, now, c.timeout)), sub}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

func stateName(s tetherv1.AgentState) string {
	switch s {
	case tetherv1.AgentState_AGENT_STATE_CONNECTED:
		return "connected"
	case tetherv1.AgentState_AGENT_STATE_UNHEALTHY:
		return "unhealthy"
	}
	return "disconnected"
}
