package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// agentEvent is an event of session under subscriber sub's incarnation
// inc ("" for a subscriber older than ADR 014).
func agentEvent(cluster, session, sub, inc string, at time.Time, kind any) *tetherv1.AgentEvent {
	ev := &tetherv1.AgentEvent{ClusterId: cluster, SessionId: session, SubscriberId: sub, SubscriberIncarnation: inc, TimeUnixNano: at.UnixNano()}
	switch k := kind.(type) {
	case *tetherv1.AgentConnected:
		ev.Kind = &tetherv1.AgentEvent_Connected{Connected: k}
	case *tetherv1.AgentDisconnected:
		ev.Kind = &tetherv1.AgentEvent_Disconnected{Disconnected: k}
	case *tetherv1.AgentHeartbeat:
		ev.Kind = &tetherv1.AgentEvent_Heartbeat{Heartbeat: k}
	}
	return ev
}

func fold(evs ...*tetherv1.AgentEvent) *tetherv1.AgentStatus {
	st := &tetherv1.AgentStatus{}
	for _, ev := range evs {
		Fold(st, ev)
	}
	return st
}

func sessions(st *tetherv1.AgentStatus) map[string]string {
	out := map[string]string{}
	for _, s := range st.GetStreams() {
		out[s.GetSessionId()] = s.GetSubscriberIncarnation()
	}
	return out
}

func TestFold(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	con := func(session, inc string) *tetherv1.AgentEvent {
		return agentEvent("x", session, "sub-0", inc, t0, &tetherv1.AgentConnected{AgentVersion: "v1"})
	}
	conAt := func(session, inc string, later time.Duration) *tetherv1.AgentEvent {
		return agentEvent("x", session, "sub-0", inc, t0.Add(later), &tetherv1.AgentConnected{AgentVersion: "v1"})
	}
	end := func(session, only string) *tetherv1.AgentEvent {
		return agentEvent("x", session, "sub-1", "", t0.Add(time.Second), &tetherv1.AgentDisconnected{Reason: "r", StreamIncarnation: only})
	}
	tests := []struct {
		name     string
		events   []*tetherv1.AgentEvent
		want     map[string]string // session: incarnation
		connects uint32
		history  int
	}{
		{"connects", []*tetherv1.AgentEvent{con("s1", "a"), con("s2", "a")}, map[string]string{"s1": "a", "s2": "a"}, 2, 2},
		{"an end", []*tetherv1.AgentEvent{con("s1", "a"), end("s1", "")}, map[string]string{}, 1, 2},
		{"an end reported twice counts once", []*tetherv1.AgentEvent{con("s1", "a"), end("s1", ""), end("s1", "")}, map[string]string{}, 1, 2},
		{"an end before its connect", []*tetherv1.AgentEvent{end("s1", ""), con("s1", "a")}, map[string]string{}, 0, 1},
		{"announced again under a new incarnation", []*tetherv1.AgentEvent{con("s1", "a"), con("s1", "b")}, map[string]string{"s1": "b"}, 1, 1},
		{"an old announcement delivered late", []*tetherv1.AgentEvent{con("s1", "a"), conAt("s1", "b", time.Minute), con("s1", "a")}, map[string]string{"s1": "b"}, 1, 1},
		{"a sweep of the old incarnation spares the new", []*tetherv1.AgentEvent{con("s1", "a"), con("s1", "b"), end("s1", "a")}, map[string]string{"s1": "b"}, 1, 1},
		{"a sweep before the new announcement", []*tetherv1.AgentEvent{con("s1", "a"), end("s1", "a"), con("s1", "b")}, map[string]string{"s1": "b"}, 2, 3},
		{"a sweep ends its incarnation's stream", []*tetherv1.AgentEvent{con("s1", "a"), end("s1", "a")}, map[string]string{}, 1, 2},
		{"a late connect of a swept incarnation", []*tetherv1.AgentEvent{end("s1", "a"), con("s1", "a")}, map[string]string{}, 0, 1},
		{"a lone heartbeat of an old subscriber", []*tetherv1.AgentEvent{agentEvent("x", "s1", "sub-0", "", t0, &tetherv1.AgentHeartbeat{})}, map[string]string{"s1": ""}, 0, 0},
		{"a heartbeat after the end", []*tetherv1.AgentEvent{con("s1", ""), end("s1", ""), agentEvent("x", "s1", "sub-0", "", t0, &tetherv1.AgentHeartbeat{})}, map[string]string{}, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := fold(tt.events...)
			got := sessions(st)
			if len(got) != len(tt.want) || st.GetConnects() != tt.connects || len(st.GetHistory()) != tt.history {
				t.Fatalf("streams %v, %d connects, %d history; want %v, %d, %d", got, st.GetConnects(), len(st.GetHistory()), tt.want, tt.connects, tt.history)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("streams %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// Registry replicas apply one cluster's events in any order: each
// session's connect and end, shuffled, leave the same streams.
func TestFoldIgnoresOrderAcrossSessions(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var evs []*tetherv1.AgentEvent
	for i, s := range []string{"s1", "s2", "s3", "s4"} {
		evs = append(evs, agentEvent("x", s, "sub-0", "a", t0, &tetherv1.AgentConnected{}))
		if i%2 == 0 {
			evs = append(evs, agentEvent("x", s, "sub-0", "a", t0, &tetherv1.AgentDisconnected{}))
		}
	}
	for range 50 {
		rand.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		if got := sessions(fold(evs...)); len(got) != 2 || got["s2"] != "a" || got["s4"] != "a" {
			t.Fatalf("streams %v", got)
		}
	}
}

func TestAlive(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	timeout := 30 * time.Second
	l := newLeases(timeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.put("sub-0", []string{"a", "b"}, now.Add(-10*time.Second))
	l.put("sub-1", []string{"c"}, now.Add(-40*time.Second))
	stream := func(sub, inc string, connected, heartbeat time.Duration) *tetherv1.AgentStream {
		return &tetherv1.AgentStream{SubscriberId: sub, SubscriberIncarnation: inc, ConnectedUnix: now.Add(connected).Unix(), LastHeartbeatUnix: now.Add(heartbeat).Unix()}
	}
	tests := []struct {
		name string
		s    *tetherv1.AgentStream
		want bool
		at   int64
	}{
		{"named by a fresh lease", stream("sub-0", "a", -time.Hour, -time.Hour), true, now.Add(-10 * time.Second).Unix()},
		{"the lease's second incarnation", stream("sub-0", "b", -time.Hour, -time.Hour), true, now.Add(-10 * time.Second).Unix()},
		{"named by an expired lease", stream("sub-1", "c", -time.Hour, -time.Hour), false, now.Add(-40 * time.Second).Unix()},
		{"an incarnation the lease no longer names", stream("sub-0", "old", -time.Hour, -time.Hour), false, now.Add(-time.Hour).Unix()},
		{"connected after the lease, not yet named", stream("sub-0", "new", -5*time.Second, -5*time.Second), true, now.Add(-5 * time.Second).Unix()},
		{"connected before the lease that does not name it", stream("sub-0", "old", -20*time.Second, -20*time.Second), false, now.Add(-20 * time.Second).Unix()},
		{"a subscriber not yet leased, young stream", stream("sub-9", "x", -5*time.Second, -5*time.Second), true, now.Add(-5 * time.Second).Unix()},
		{"a subscriber never leased, old stream", stream("sub-9", "x", -time.Hour, -time.Hour), false, now.Add(-time.Hour).Unix()},
		{"an old subscriber's fresh heartbeat", stream("sub-0", "", -time.Hour, -20*time.Second), true, now.Add(-20 * time.Second).Unix()},
		{"an old subscriber's stale heartbeat", stream("sub-0", "", -time.Hour, -40*time.Second), false, now.Add(-40 * time.Second).Unix()},
	}
	for _, tt := range tests {
		if ok, at := l.alive(tt.s, now); ok != tt.want || at != tt.at {
			t.Errorf("%s: alive %v at %d, want %v at %d", tt.name, ok, at, tt.want, tt.at)
		}
	}
}

func TestDead(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLeases(30*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.put("fresh", []string{"a"}, now.Add(-10*time.Second))
	l.put("late", []string{"a"}, now.Add(-45*time.Second))
	l.put("gone", []string{"a"}, now.Add(-61*time.Second))
	tests := []struct {
		sub, inc string
		want     bool
	}{
		{"fresh", "a", false},
		{"fresh", "b", true}, // the lease no longer names it
		{"late", "a", false}, // unhealthy, not yet swept
		{"gone", "a", true},  // two timeouts unrenewed
		{"never", "a", true}, // no lease at all, and an old stream
		{"fresh", "", false}, // an old subscriber's: by its heartbeats, never swept
	}
	for _, tt := range tests {
		s := &tetherv1.AgentStream{SubscriberId: tt.sub, SubscriberIncarnation: tt.inc, ConnectedUnix: now.Add(-time.Hour).Unix(), LastHeartbeatUnix: now.Add(-time.Hour).Unix()}
		if got := l.dead(s, now); got != tt.want {
			t.Errorf("%s/%s: dead %v, want %v", tt.sub, tt.inc, got, tt.want)
		}
	}
}

// A lease that expires, or that stops naming an incarnation, asks for one
// sweep; a renewal naming the same ones does not.
func TestLeasesAskForSweeps(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLeases(30*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	asked := func() bool {
		select {
		case <-l.sweep:
			return true
		default:
			return false
		}
	}
	l.put("sub-0", []string{"a"}, now)
	l.put("sub-0", []string{"a", "b"}, now.Add(time.Second))
	l.expire(now.Add(10 * time.Second))
	if asked() {
		t.Fatal("a sweep asked with nothing dead")
	}
	l.put("sub-0", []string{"b"}, now.Add(2*time.Second))
	if !asked() {
		t.Fatal("no sweep when incarnation a was dropped")
	}
	l.expire(now.Add(40 * time.Second))
	if asked() {
		t.Fatal("a sweep asked one timeout past the lease: its streams only show unhealthy")
	}
	l.expire(now.Add(70 * time.Second))
	if !asked() {
		t.Fatal("no sweep two timeouts past the lease")
	}
	l.expire(now.Add(80 * time.Second))
	if asked() {
		t.Fatal("an expired lease swept twice")
	}
	// Renewed after expiring: its streams were swept meanwhile, and the
	// subscriber announces them under a new incarnation; what is left of
	// the old one is swept again.
	l.put("sub-0", []string{"b"}, now.Add(81*time.Second))
	if !asked() {
		t.Fatal("no sweep after an expired lease came back")
	}
}

func TestDescribe(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	timeout := 30 * time.Second
	l := newLeases(timeout, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.put("sub-0", []string{"a"}, now.Add(-5*time.Second))
	st := fold(
		agentEvent("x", "s1", "sub-0", "a", now.Add(-time.Hour), &tetherv1.AgentConnected{}),
		agentEvent("x", "s2", "sub-1", "z", now.Add(-2*time.Hour), &tetherv1.AgentConnected{}))
	describe(st, now, timeout, l.alive)
	if st.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED || st.GetSinceUnix() != now.Add(-2*time.Hour).Unix() || st.GetStreams()[0].GetLastHeartbeatUnix() != now.Add(-5*time.Second).Unix() {
		t.Fatalf("with one stream vouched for: %v", st)
	}
	describe(st, now.Add(time.Minute), timeout, l.alive)
	if st.GetState() != tetherv1.AgentState_AGENT_STATE_UNHEALTHY || st.GetSinceUnix() != now.Add(-5*time.Second+timeout).Unix() {
		t.Fatalf("with the lease expired: %v", st)
	}
	Fold(st, agentEvent("x", "s1", "sub-0", "a", now.Add(2*time.Minute), &tetherv1.AgentDisconnected{}))
	Fold(st, agentEvent("x", "s2", "sub-0", "a", now.Add(3*time.Minute), &tetherv1.AgentDisconnected{}))
	describe(st, now.Add(4*time.Minute), timeout, l.alive)
	if st.GetState() != tetherv1.AgentState_AGENT_STATE_DISCONNECTED || st.GetSinceUnix() != now.Add(3*time.Minute).Unix() {
		t.Fatalf("without streams: %v", st)
	}
}

func publishAll(t *testing.T, ctx context.Context, f fixture, evs ...*tetherv1.AgentEvent) {
	t.Helper()
	for _, ev := range evs {
		subj, _ := subject.AgentEvents(ev.GetClusterId())
		b, _ := proto.Marshal(ev)
		if _, err := f.js.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
}

func renewLease(t *testing.T, ctx context.Context, f fixture, sub string, incarnations ...string) {
	t.Helper()
	subj, _ := subject.SubscriberLease(sub)
	b, _ := proto.Marshal(&tetherv1.SubscriberLease{SubscriberId: sub, Incarnations: incarnations})
	if _, err := f.js.Publish(ctx, subj, b); err != nil {
		t.Fatal(err)
	}
}

func TestAgentViewRebuildsFromTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	viewCtx, stopView := context.WithCancel(ctx)
	cfg := AgentViewConfig{JS: f.js, Replicas: 1, Timeout: 30 * time.Second, Logger: log}
	v, err := StartAgentView(viewCtx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	renewLease(t, ctx, f, "sub-0", "i0")
	renewLease(t, ctx, f, "sub-1", "i1")
	var events []*tetherv1.AgentEvent
	for _, c := range []string{"a", "b", "c"} {
		events = append(events, agentEvent(c, "s-"+c, "sub-0", "i0", t0, &tetherv1.AgentConnected{AgentVersion: "v1"}))
	}
	events = append(events, agentEvent("b", "s-b", "sub-0", "i0", t0.Add(5*time.Second), &tetherv1.AgentDisconnected{Reason: "gone"}),
		agentEvent("b", "s-b2", "sub-1", "i1", t0.Add(6*time.Second), &tetherv1.AgentConnected{}))
	publishAll(t, ctx, f, events...)
	waitCaughtUp(t, ctx, v)
	before := snapshot(t, ctx, v, "a", "b", "c")
	if got := before["b"]; len(got.GetStreams()) != 1 || got.GetStreams()[0].GetSubscriberId() != "sub-1" || got.GetConnects() != 2 {
		t.Fatalf("b = %v", got)
	}
	if st := v.Status("b", time.Now()); st.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED || len(st.GetHistory()) != 1 {
		t.Fatalf("b from the read model = %v", st)
	}
	stopView()
	if err := f.js.DeleteKeyValue(ctx, AgentsBucket); err != nil {
		t.Fatal(err)
	}
	v2, err := StartAgentView(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, v2)
	after := snapshot(t, ctx, v2, "a", "b", "c")
	for c := range before {
		if !proto.Equal(before[c], after[c]) {
			t.Fatalf("cluster %s rebuilt\n%v\nwas\n%v", c, after[c], before[c])
		}
	}
}

// A subscriber that restarts under the same name has its old
// incarnation's streams swept once its new lease no longer names it; a
// subscriber whose lease expires has all its streams swept; a stream
// announced again under a new incarnation survives the old one's sweep;
// and two registry replicas store each sweep once.
func TestAgentViewSweepsDeadIncarnations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := AgentViewConfig{JS: f.js, Replicas: 1, Timeout: 2 * time.Second, Logger: log}
	v, err := StartAgentView(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartAgentView(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Subscribers renew their leases every 200 ms while they live.
	var mu sync.Mutex
	live := map[string][]string{"sub-0": {"old"}, "sub-1": {"one"}}
	set := func(sub string, incs ...string) {
		mu.Lock()
		defer mu.Unlock()
		if incs == nil {
			delete(live, sub)
		} else {
			live[sub] = incs
		}
	}
	renew := func() {
		mu.Lock()
		defer mu.Unlock()
		for sub, incs := range live {
			subj, _ := subject.SubscriberLease(sub)
			b, _ := proto.Marshal(&tetherv1.SubscriberLease{SubscriberId: sub, Incarnations: incs})
			_, _ = f.js.Publish(ctx, subj, b)
		}
	}
	renew()
	stopped := make(chan struct{})
	renewCtx, stopRenewing := context.WithCancel(ctx)
	go func() {
		defer close(stopped)
		for renewCtx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			renew()
		}
	}()
	defer func() { stopRenewing(); <-stopped }()
	old := time.Now().Add(-time.Minute)
	publishAll(t, ctx, f,
		agentEvent("a", "s-a", "sub-0", "old", old, &tetherv1.AgentConnected{}),
		agentEvent("b", "s-b", "sub-0", "old", old, &tetherv1.AgentConnected{}),
		agentEvent("c", "s-c", "sub-1", "one", old, &tetherv1.AgentConnected{}))
	waitCaughtUp(t, ctx, v)
	// sub-0 moves to a new incarnation: "b" is announced anew under it,
	// "a" is not (its end was lost).
	set("sub-0", "new", "old")
	publishAll(t, ctx, f, agentEvent("b", "s-b", "sub-0", "new", time.Now(), &tetherv1.AgentConnected{}))
	set("sub-0", "new")
	waitFor(t, ctx, func() bool {
		return len(v.Status("a", time.Now()).GetStreams()) == 0 && len(v.Status("b", time.Now()).GetStreams()) == 1
	})
	if st, _ := stored(ctx, v, "a"); len(st.GetHistory()) != 2 {
		t.Fatalf("a's history after one sweep by two replicas: %v", st.GetHistory())
	}
	if st := v.Status("c", time.Now()); st.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED {
		t.Fatalf("c, on a live subscriber: %v", st)
	}
	// sub-1 goes silent: its lease expires, "c" shows unhealthy, then is
	// swept.
	set("sub-1")
	waitFor(t, ctx, func() bool {
		return v.Status("c", time.Now()).GetState() == tetherv1.AgentState_AGENT_STATE_UNHEALTHY || len(v.Status("c", time.Now()).GetStreams()) == 0
	})
	waitFor(t, ctx, func() bool { return len(v.Status("c", time.Now()).GetStreams()) == 0 })
	if st := v.Status("b", time.Now()); st.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED {
		t.Fatalf("b after sub-1's lease expired: %v", st)
	}
}

// A registry that restarts sweeps nothing alive: it reads the leases
// before it judges any stream.
func TestAgentViewRestartSweepsNothingAlive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := AgentViewConfig{JS: f.js, Replicas: 1, Timeout: 30 * time.Second, Logger: log}
	viewCtx, stopView := context.WithCancel(ctx)
	v, err := StartAgentView(viewCtx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	renewLease(t, ctx, f, "sub-0", "live")
	old := time.Now().Add(-time.Hour)
	var evs []*tetherv1.AgentEvent
	for _, c := range []string{"a", "b", "c"} {
		evs = append(evs, agentEvent(c, "s-"+c, "sub-0", "live", old, &tetherv1.AgentConnected{}))
	}
	publishAll(t, ctx, f, evs...)
	waitCaughtUp(t, ctx, v)
	stopView()
	stream, err := f.js.Stream(ctx, AgentsStream)
	if err != nil {
		t.Fatal(err)
	}
	before := stream.CachedInfo().State.LastSeq
	v2, err := StartAgentView(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return v2.Ready(ctx) == nil && v2.passes.Load() > 0 })
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != before {
		t.Fatalf("the restarted view wrote %d events", info.State.LastSeq-before)
	}
	for _, c := range []string{"a", "b", "c"} {
		if st := v2.Status(c, time.Now()); st.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED {
			t.Fatalf("%s after the restart: %v", c, st)
		}
	}
}

// Until the leases as they stood are read, a sweep judges nothing: a
// lease not yet read would make its subscriber's streams look dead.
func TestSweepWaitsForTheLeases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	if _, err := f.js.CreateOrUpdateStream(ctx, AgentsStreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v := &AgentView{cfg: AgentViewConfig{JS: f.js, Timeout: 30 * time.Second, Logger: log, Now: time.Now},
		leases: newLeases(30*time.Second, log), loaded: true,
		model: map[string]*tetherv1.AgentStatus{"a": fold(agentEvent("a", "s-a", "sub-0", "inc", time.Now().Add(-time.Hour), &tetherv1.AgentConnected{}))}}
	stream, err := f.js.Stream(ctx, AgentsStream)
	if err != nil {
		t.Fatal(err)
	}
	written := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	if err := v.sweep(ctx); err != nil || v.passes.Load() != 0 || written() != 0 {
		t.Fatalf("before the leases were read: %v, %d passes, %d events", err, v.passes.Load(), written())
	}
	// Read, and sub-0 has none: its old stream is dead.
	v.leases.markLoaded()
	if err := v.sweep(ctx); err != nil || v.passes.Load() != 1 || written() != 1 {
		t.Fatalf("after: %v, %d passes, %d events", err, v.passes.Load(), written())
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("timed out")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitCaughtUp(t *testing.T, ctx context.Context, v *AgentView) {
	t.Helper()
	waitFor(t, ctx, func() bool {
		done, err := v.CaughtUp(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return done
	})
}

func snapshot(t *testing.T, ctx context.Context, v *AgentView, clusters ...string) map[string]*tetherv1.AgentStatus {
	t.Helper()
	out := map[string]*tetherv1.AgentStatus{}
	for _, c := range clusters {
		st, err := stored(ctx, v, c)
		if err != nil || st == nil {
			t.Fatalf("%s: %v, %v", c, st, err)
		}
		out[c] = st
	}
	return out
}

// stored is a cluster's projection as the bucket holds it, with its whole
// history; nil if no agent ever reported.
func stored(ctx context.Context, v *AgentView, cluster string) (*tetherv1.AgentStatus, error) {
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
