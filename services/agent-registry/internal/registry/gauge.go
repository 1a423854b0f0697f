package registry

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// The metric counts clusters by state and subscriber at each scrape. A
// cluster's state is a function of its streams' subscriber incarnations
// and those subscribers' leases, so clusters whose streams are on the same
// incarnations share it: a scrape judges each group once, and its cost
// follows the subscribers, not the fleet. Only a group whose state rests
// on its streams' own times (an incarnation its lease does not name yet,
// or a stream from before ADR 014) is judged cluster by cluster, and that
// lasts only while things change.

// groups are the read model's clusters by the incarnations of their
// streams and the subscriber of their newest one. Guarded by AgentView.mu.
type groups struct {
	m map[string]*group
}

type group struct {
	// subscriber of the newest stream, "-" without streams.
	subscriber string
	// streams are one of each of the members' streams' (subscriber,
	// incarnation), all a lease is asked about.
	streams []*tetherv1.AgentStream
	members map[string]*tetherv1.AgentStatus
}

func newGroups() groups { return groups{m: map[string]*group{}} }

// groupKey names the group of st: its newest stream's subscriber, then
// its streams' subscribers and incarnations, sorted.
func groupKey(st *tetherv1.AgentStatus) (key, subscriber string) {
	subscriber = "-"
	streams := st.GetStreams()
	if n := len(streams); n > 0 {
		subscriber = streams[n-1].GetSubscriberId()
	}
	parts := make([]string, 0, len(streams))
	for _, s := range streams {
		parts = append(parts, s.GetSubscriberId()+"\x00"+s.GetSubscriberIncarnation())
	}
	slices.Sort(parts)
	parts = slices.Compact(parts)
	return subscriber + "\x01" + strings.Join(parts, "\x01"), subscriber
}

func (g groups) add(cluster string, st *tetherv1.AgentStatus) {
	key, sub := groupKey(st)
	gr := g.m[key]
	if gr == nil {
		gr = &group{subscriber: sub, members: map[string]*tetherv1.AgentStatus{}}
		seen := map[[2]string]bool{}
		for _, s := range st.GetStreams() {
			k := [2]string{s.GetSubscriberId(), s.GetSubscriberIncarnation()}
			if !seen[k] {
				seen[k] = true
				gr.streams = append(gr.streams, &tetherv1.AgentStream{SubscriberId: k[0], SubscriberIncarnation: k[1]})
			}
		}
		g.m[key] = gr
	}
	gr.members[cluster] = st
}

func (g groups) remove(cluster string, st *tetherv1.AgentStatus) {
	if st == nil {
		return
	}
	key, _ := groupKey(st)
	if gr := g.m[key]; gr != nil {
		delete(gr.members, cluster)
		if len(gr.members) == 0 {
			delete(g.m, key)
		}
	}
}

// state is the state every member of gr is in at now, if they share one.
func (v *AgentView) groupState(gr *group, now time.Time) (tetherv1.AgentState, bool) {
	if len(gr.streams) == 0 {
		return tetherv1.AgentState_AGENT_STATE_DISCONNECTED, true
	}
	shared := true
	for _, s := range gr.streams {
		if s.GetSubscriberIncarnation() == "" {
			shared = false // alive by each stream's own heartbeats
			continue
		}
		named, fresh := v.leases.vouches(s.GetSubscriberId(), s.GetSubscriberIncarnation(), now)
		switch {
		case fresh:
			return tetherv1.AgentState_AGENT_STATE_CONNECTED, true
		case !named:
			shared = false // alive while young: each stream's own time
		}
	}
	return tetherv1.AgentState_AGENT_STATE_UNHEALTHY, shared
}

// Gauge counts agents by state and subscriber for /metrics, from the read
// model, each time it is scraped.
func (v *AgentView) Gauge() prometheus.Collector {
	return &agentCollector{v: v, desc: prometheus.NewDesc("tether_registry_agents",
		"Clusters' agents by state (connected, unhealthy, disconnected) and the subscriber of their newest stream.", []string{"state", "subscriber"}, nil)}
}

type agentCollector struct {
	v    *AgentView
	desc *prometheus.Desc
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	for k, n := range c.v.counts(c.v.cfg.Now()) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// counts are the clusters by state name and subscriber at now.
func (v *AgentView) counts(now time.Time) map[[2]string]int {
	out := map[[2]string]int{}
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, gr := range v.groups.m {
		if state, shared := v.groupState(gr, now); shared {
			out[[2]string{stateName(state), gr.subscriber}] += len(gr.members)
			continue
		}
		for _, st := range gr.members {
			out[[2]string{stateName(v.state(st, now)), gr.subscriber}]++
		}
	}
	return out
}
