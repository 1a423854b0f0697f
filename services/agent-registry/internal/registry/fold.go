package registry

import (
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// historyLen is how many connects and disconnects a cluster's entry keeps.
const historyLen = 20

// Fold applies ev to a cluster's projection. It is the whole projection:
// rebuilding is folding the stream again. Events of one session may come
// in any order (registry replicas apply them concurrently): a connect
// after its session's end is ignored, a connect of a known stream only
// updates it, and an end is taken once.
func Fold(st *tetherv1.AgentStatus, ev *tetherv1.AgentEvent) {
	at := ev.GetTimeUnixNano() / int64(time.Second)
	session, inc := ev.GetSessionId(), ev.GetSubscriberIncarnation()
	i := findStream(st, session)
	remember := func() {
		st.History = append(st.History, ev)
		if len(st.History) > historyLen {
			st.History = st.History[len(st.History)-historyLen:]
		}
	}
	switch k := ev.GetKind().(type) {
	case *tetherv1.AgentEvent_Connected:
		switch {
		case i >= 0:
			// Announced again, under the subscriber's new incarnation;
			// an older announcement delivered late changes nothing.
			if s := st.Streams[i]; at >= s.GetLastHeartbeatUnix() {
				s.SubscriberId, s.SubscriberIncarnation, s.LastHeartbeatUnix = ev.GetSubscriberId(), inc, at
			}
		case !ended(st, session, inc):
			st.Streams = append(st.Streams, &tetherv1.AgentStream{SessionId: session, SubscriberId: ev.GetSubscriberId(), SubscriberIncarnation: inc,
				AgentVersion: k.Connected.GetAgentVersion(), KubernetesVersion: k.Connected.GetKubernetesVersion(),
				ConnectedUnix: at, LastHeartbeatUnix: at})
			st.Connects++
			remember()
		}
	case *tetherv1.AgentEvent_Disconnected:
		// Reported twice at times: by its subscriber, and by the agent
		// once it is connected again (a subscriber that died says
		// nothing). The first one counts. A sweep's names the incarnation
		// it ends, and spares the same session announced anew.
		only := k.Disconnected.GetStreamIncarnation()
		switch {
		case i >= 0 && (only == "" || only == st.Streams[i].GetSubscriberIncarnation()):
			st.Streams = append(st.Streams[:i], st.Streams[i+1:]...)
			remember()
		case i < 0 && !ended(st, session, only):
			// Before its connect: kept, so the connect is known late.
			remember()
		}
	case *tetherv1.AgentEvent_Heartbeat:
		// From a subscriber older than ADR 014.
		if i >= 0 {
			st.Streams[i].LastHeartbeatUnix = at
		} else if !ended(st, session, inc) {
			// Its connect was lost (NATS away at the time): the heartbeat
			// is proof enough of the stream. One that comes after the
			// stream's end (from a subscriber cut off for a while) is not.
			st.Streams = append(st.Streams, &tetherv1.AgentStream{SessionId: session, SubscriberId: ev.GetSubscriberId(), ConnectedUnix: at, LastHeartbeatUnix: at})
		}
	}
}

func findStream(st *tetherv1.AgentStatus, session string) int {
	for i, s := range st.GetStreams() {
		if s.GetSessionId() == session {
			return i
		}
	}
	return -1
}

// ended reports whether the history has the end of session as reported
// under incarnation inc: an end of the whole session, or of inc's.
func ended(st *tetherv1.AgentStatus, session, inc string) bool {
	for _, h := range st.GetHistory() {
		if d := h.GetDisconnected(); d != nil && h.GetSessionId() == session {
			if only := d.GetStreamIncarnation(); only == "" || only == inc {
				return true
			}
		}
	}
	return false
}

// alive says whether a stream is alive at now, and the last time it was
// known to be.
type alive func(s *tetherv1.AgentStream, now time.Time) (bool, int64)

// heartbeatAlive is the rule for streams of subscribers older than ADR
// 014, which reported each stream's heartbeats: alive while the last is
// within timeout. Heartbeats are kept to the second, rounded down: the
// heartbeat may be up to a second newer than recorded, and is given that
// second.
func heartbeatAlive(s *tetherv1.AgentStream, now time.Time, timeout time.Duration) (bool, int64) {
	return now.Sub(time.Unix(s.GetLastHeartbeatUnix()+1, 0)) <= timeout, s.GetLastHeartbeatUnix()
}

// describe fills in st's state at now, since when, and when each stream
// was last known alive: connected while some stream is alive, unhealthy
// while it has streams but none is, disconnected without streams.
func describe(st *tetherv1.AgentStatus, now time.Time, timeout time.Duration, isAlive alive) {
	var anyAlive bool
	var first, last int64
	for _, s := range st.GetStreams() {
		ok, at := isAlive(s, now)
		s.LastHeartbeatUnix = at
		anyAlive = anyAlive || ok
		last = max(last, at)
		if first == 0 || s.GetConnectedUnix() < first {
			first = s.GetConnectedUnix()
		}
	}
	switch {
	case len(st.GetStreams()) == 0:
		st.State = tetherv1.AgentState_AGENT_STATE_DISCONNECTED
		st.SinceUnix = 0
		if n := len(st.GetHistory()); n > 0 {
			st.SinceUnix = st.GetHistory()[n-1].GetTimeUnixNano() / int64(time.Second)
		}
	case anyAlive:
		st.State, st.SinceUnix = tetherv1.AgentState_AGENT_STATE_CONNECTED, first
	default:
		st.State, st.SinceUnix = tetherv1.AgentState_AGENT_STATE_UNHEALTHY, last+int64(timeout/time.Second)
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
