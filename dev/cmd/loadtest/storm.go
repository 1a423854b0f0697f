package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/stack"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/loadtest/driver"
)

// stormVictim is the subscriber killed: it holds half the fleet's streams.
const stormVictim = "subscriber-1"

// stormSecond is the fleet one second after the kill.
type stormSecond struct {
	at                time.Duration
	connected, full   float64 // agentsim's agents holding a stream, and all their streams
	streams           [2]float64
	registry          [2]int // live streams in agent-registry's view, by subscriber
	registryMatches   bool
	failed, requested int
}

// stormResult is what the storm measured.
type stormResult struct {
	killedAt     time.Duration // into the load
	restartTook  time.Duration // until the new subscriber was ready
	fullAfter    time.Duration // every agent back to all its streams, -1: never
	matchedAfter time.Duration // the registry's view matched the subscribers again, -1: never
	seconds      []stormSecond
}

// storm runs steady load for c.duration, SIGKILLs the subscriber holding
// half the fleet a third of the way in, restarts it c.stormDown later as
// Kubernetes would (never, when negative), and follows the fleet second by
// second until the load ends.
func storm(ctx context.Context, c config, sys *system, target driver.Target, sims *fleet) (*driver.Result, *stormResult, error) {
	s := sys.local
	type loadDone struct {
		res *driver.Result
		err error
	}
	done := make(chan loadDone, 1)
	go func() {
		res, err := driver.Run(ctx, target, driver.Steady(c.rate, c.duration))
		done <- loadDone{res, err}
	}()
	start := time.Now()
	sr := &stormResult{fullAfter: -1, matchedAfter: -1}
	if !sleep(ctx, c.duration/3) {
		return nil, nil, ctx.Err()
	}
	victim := s.Process(stormVictim)
	logf("storm: SIGKILL %s, holding %v streams", stormVictim, gaugeOf(s, stormVictim, "tether_agent_streams"))
	killed := time.Now()
	sr.killedAt = killed.Sub(start)
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		return nil, nil, err
	}
	<-victim.Done()
	restarted := make(chan error, 1)
	if c.stormDown >= 0 {
		go func() {
			if sleep(ctx, c.stormDown) {
				restarted <- s.Restart(ctx, stormVictim)
			}
		}()
	} else {
		restarted = nil // it stays down
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-restarted:
			if err != nil {
				return nil, nil, fmt.Errorf("restarting %s: %w", stormVictim, err)
			}
			sr.restartTook = time.Since(killed)
			restarted = nil
			continue
		case ld := <-done:
			if ld.err != nil {
				return nil, nil, ld.err
			}
			// Requests by the second they were sent, counted from the kill.
			for i := range sr.seconds {
				at := int((sr.killedAt + sr.seconds[i].at).Seconds())
				if at < len(ld.res.Timeline) {
					sr.seconds[i].failed, sr.seconds[i].requested = ld.res.Timeline[at].Fail, ld.res.Timeline[at].Sent
				}
			}
			return ld.res, sr, nil
		case <-tick.C:
		}
		sec := stormSecond{at: time.Since(killed).Round(time.Second)}
		sec.connected = sims.metric(`tether_agentsim_agents{state="connected"}`)
		sec.full = sims.metric(`tether_agentsim_agents{state="full"}`)
		for i, sub := range []string{"subscriber", stormVictim} {
			sec.streams[i] = gaugeOf(s, sub, "tether_agent_streams")
		}
		sec.registry = registryStreams(ctx, sys.clusters)
		sec.registryMatches = float64(sec.registry[0]) == sec.streams[0] && float64(sec.registry[1]) == sec.streams[1]
		if sr.fullAfter < 0 && sec.full >= float64(c.agents) {
			sr.fullAfter = sec.at
		}
		if sr.matchedAfter < 0 && sec.registryMatches && sec.full >= float64(c.agents) {
			sr.matchedAfter = sec.at
		}
		sr.seconds = append(sr.seconds, sec)
	}
}

func gaugeOf(s *stack.Stack, service, series string) float64 {
	v, _ := s.Metric(service, series)
	return v
}

// registryStreams counts the streams agent-registry's view holds alive (a
// heartbeat within the stack's heartbeat timeout), by subscriber.
func registryStreams(ctx context.Context, clusters tetherv1connect.ClusterServiceClient) [2]int {
	var out [2]int
	now := time.Now()
	for token := ""; ; {
		resp, err := clusters.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{PageSize: 1000, PageToken: token}))
		if err != nil {
			return out
		}
		for _, c := range resp.Msg.GetClusters() {
			for _, st := range c.GetAgent().GetStreams() {
				if now.Sub(time.Unix(st.GetLastHeartbeatUnix(), 0)) > 30*time.Second {
					continue
				}
				switch st.GetSubscriberId() {
				case "subscriber-0":
					out[0]++
				case "subscriber-1":
					out[1]++
				}
			}
		}
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return out
		}
	}
}

func (r *report) stormSection(b *strings.Builder) {
	st := r.storm
	switch {
	case r.cfg.stormDown < 0:
		fmt.Fprintf(b, "## Storm\n\nUnder the steady load above, %s (holding half the fleet's streams) was killed with SIGKILL %v into the load and stayed down: every agent's streams went to the one subscriber left.\n\n",
			stormVictim, st.killedAt.Round(time.Second))
	default:
		fmt.Fprintf(b, "## Storm\n\nUnder the steady load above, %s (holding half the fleet's streams) was killed with SIGKILL %v into the load and restarted %v later, as Kubernetes would; its new process was ready %v after the kill.\n\n",
			stormVictim, st.killedAt.Round(time.Second), r.cfg.stormDown, st.restartTook.Round(100*time.Millisecond))
	}
	after := func(d time.Duration) string {
		if d < 0 {
			return "not within the run"
		}
		return d.String()
	}
	fmt.Fprintf(b, "- Every agent back to all its streams: %s after the kill.\n", after(st.fullAfter))
	fmt.Fprintf(b, "- agent-registry's view matching the subscribers' own counts again (and every agent back): %s after the kill.\n", after(st.matchedAfter))
	fmt.Fprintf(b, "- Requests: %d failed of %d (%s); %d of the failures said when to come back (Retry-After); errors without an answer: %v.\n\n",
		r.load.Failed(), r.load.Sent(), codes(r.load.Codes), r.load.RetryAfter, r.load.Errors)
	b.WriteString("| s after the kill | agents with a stream | with all their streams | subscriber streams | subscriber-1 streams | registry: subscriber-0 | registry: subscriber-1 | view matches | requests sent | failed |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
	for _, s := range st.seconds {
		fmt.Fprintf(b, "| %.0f | %.0f | %.0f | %.0f | %.0f | %d | %d | %v | %d | %d |\n", s.at.Seconds(), s.connected, s.full, s.streams[0], s.streams[1],
			s.registry[0], s.registry[1], s.registryMatches, s.requested, s.failed)
	}
	b.WriteString("\n")
}
