package router

import (
	"context"
	"errors"
	"time"

	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
)

// A router learns that a subscriber took a request from its answers or
// its ack, and that the subscriber is gone from the probes here: NATS
// says nothing when a peer dies or is cut off.

// probePeers checks, for quiet calls, that the subscriber processes
// holding their agent streams are there: one ping per process, whatever
// number of calls and sessions it holds (ADR 016; a session of a
// subscriber older than that is pinged itself). It fails the calls of a
// process that is gone: nobody listened twice in a row (once may be a NATS
// node that restarted and has not learned the others' subscriptions yet),
// or nothing answered for four probe periods (a subscriber cut off from
// NATS, or frozen; a loaded one still answers within two). A session that
// ended while its process lives says so itself (a Reset to each router),
// and probeIdle finds any word of that lost. A call no subscriber ever
// answered counts as lost after AckTimeout: subscribers ack what they hold
// (natslink.Ack).
func (s *Server) probePeers(ctx context.Context) {
	now := time.Now()
	quiet := now.Add(-s.cfg.PeerProbe).UnixNano()
	byPeer := map[string][]*call{}
	s.eachCall(func(c *call) {
		if c.lastRecv.Load() >= quiet || c.lastChecked.Load() >= quiet {
			return
		}
		peer := c.probeTarget()
		if peer == "" {
			c.mu.Lock()
			answered := c.isAnswered
			c.mu.Unlock()
			if !answered && now.Sub(c.sent) > s.cfg.AckTimeout {
				// The dial still waits for that first answer: this ends it.
				c.lost("no subscriber took the request")
			}
			return
		}
		byPeer[peer] = append(byPeer[peer], c)
	})
	s.mu.Lock()
	for peer := range s.unanswered {
		if _, ok := byPeer[peer]; !ok {
			delete(s.unanswered, peer)
		}
	}
	s.mu.Unlock()
	peers := make([]string, 0, len(byPeer))
	subjs := make([]string, 0, len(byPeer))
	for peer := range byPeer {
		peers = append(peers, peer)
		subjs = append(subjs, subject.Session(peer, natslink.SessionProbe))
	}
	for i, err := range natslink.PingAll(ctx, s.cfg.NATS, subjs, 2*s.cfg.PeerProbe) {
		peer := peers[i]
		s.mu.Lock()
		u, known := s.unanswered[peer]
		switch {
		case err == nil:
			delete(s.unanswered, peer)
		case !known:
			u = unanswered{since: now}
		}
		if errors.Is(err, natslink.ErrGone) {
			u.gone++
		} else {
			u.gone = 0
		}
		if err != nil {
			s.unanswered[peer] = u
		}
		s.mu.Unlock()
		if err != nil && u.gone < 2 && now.Sub(u.since) < 4*s.cfg.PeerProbe {
			continue // not yet proof
		}
		for _, c := range byPeer[peer] {
			if err == nil {
				c.lastChecked.Store(time.Now().UnixNano())
				continue
			}
			c.lost("the subscriber holding the agent stream is gone")
		}
		if err != nil {
			s.log.Info("subscriber unreachable; failing the calls on its agent streams", "peer", peer, "calls", len(byPeer[peer]), "err", err)
		}
	}
}

// probeIdle asks the subscriber of each call quiet for IdleProbe whether
// it still has that call: one that forgot it (a lost end, a restart
// between two probes) ends it here too.
func (s *Server) probeIdle(ctx context.Context) {
	cutoff := time.Now().Add(-s.cfg.IdleProbe).UnixNano()
	var quiet []*call
	s.eachCall(func(c *call) {
		if c.lastRecv.Load() < cutoff && c.peerSubject() != "" {
			quiet = append(quiet, c)
		}
	})
	subjs := make([]string, len(quiet))
	for i, c := range quiet {
		subjs[i] = c.peerSubject()
	}
	for i, err := range natslink.PingAll(ctx, s.cfg.NATS, subjs, 5*time.Second) {
		c := quiet[i]
		if errors.Is(err, natslink.ErrGone) {
			c.lost("the subscriber no longer has the request")
		} else if err == nil {
			c.lastRecv.Store(time.Now().UnixNano())
		}
	}
}

// unanswered is a subscriber process (or, before ADR 016, an agent
// stream) that failed its last probes: since when, and how many in a row
// found nobody listening.
type unanswered struct {
	since time.Time
	gone  int
}

// natsLost runs when the router's NATS link drops: frames of every call in
// flight may be lost with it, so each fails now, and its request goes out
// again (or its watch resumes) once the link is back, where that is safe.
func (s *Server) natsLost() {
	s.epoch.Add(1)
	var calls []*call
	s.eachCall(func(c *call) { calls = append(calls, c) })
	for _, c := range calls {
		c.lost("the router lost its NATS connection")
	}
	if len(calls) > 0 {
		s.log.Warn("NATS connection lost; failed the calls in flight", "calls", len(calls))
	}
}
