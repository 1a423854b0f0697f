package agent

import (
	"net/http"
	"sync"
	"time"
)

// memory remembers the mutations this agent process ran, by request id, for
// a while: a router that lost a hop sends a mutation again with the same
// id, and it gets the first result instead of a second run (ADR 006).
type memory struct {
	ttl      time.Duration
	maxBytes int
	now      func() time.Time

	mu       sync.Mutex
	entries  map[string]*outcome
	finished []*outcome // in the order they finished, for expiry
	bytes    int
	// running counts mutations under way, whether or not anyone still
	// waits for them: the agent lets them finish before it exits.
	running sync.WaitGroup
}

// outcome is what became of one mutation. Its fields are set once done is
// closed.
type outcome struct {
	id   string
	done chan struct{}

	// ran: the kube-apiserver had the whole request. False when its body
	// broke off on the way: then nothing ran, and another attempt may.
	ran    bool
	status int
	header http.Header
	body   []byte
	// bodyDropped: the response was too large to keep, so a retry gets
	// its status without it.
	bodyDropped bool
	expires     time.Time
	size        int
}

func newMemory(ttl time.Duration, maxBytes int) *memory {
	return &memory{ttl: ttl, maxBytes: maxBytes, now: time.Now, entries: map[string]*outcome{}}
}

// begin claims request id for this attempt: first is true when nobody ran
// it yet, and then the caller must call finish or abandon. Otherwise o is
// the earlier attempt's, to wait for.
func (m *memory) begin(id string) (o *outcome, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	if o := m.entries[id]; o != nil {
		return o, false
	}
	o = &outcome{id: id, done: make(chan struct{})}
	m.entries[id] = o
	m.running.Add(1)
	return o, true
}

// finish records the result of a mutation that ran; body is kept only
// while the memory has room for it.
func (m *memory) finish(o *outcome, status int, header http.Header, body []byte) {
	m.record(o, status, header, body, true)
}

// finishWithoutBody records a mutation that ran whose response body is
// not kept: it broke off, or was too large to hold.
func (m *memory) finishWithoutBody(o *outcome, status int, header http.Header) {
	m.record(o, status, header, nil, false)
}

// record sets o's fields under the lock and before done is closed, so
// that an attempt waiting on done reads them whole.
func (m *memory) record(o *outcome, status int, header http.Header, body []byte, keep bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o.ran, o.status, o.header = true, status, header
	o.size = len(body) + 512
	if !keep || o.size > m.maxBytes/8 {
		o.bodyDropped, o.size = true, 512
	} else {
		o.body = append([]byte(nil), body...)
	}
	o.expires = m.now().Add(m.ttl)
	m.bytes += o.size
	m.finished = append(m.finished, o)
	close(o.done)
	m.running.Done()
	m.expireLocked()
}

// abandon records that a mutation did not run (its body broke off before
// the kube-apiserver had all of it): the next attempt runs it.
func (m *memory) abandon(o *outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[o.id] == o {
		delete(m.entries, o.id)
	}
	close(o.done)
	m.running.Done()
}

// expireLocked forgets results past their time, and the oldest ones while
// the memory is over its size.
func (m *memory) expireLocked() {
	now := m.now()
	n := 0
	for n < len(m.finished) && (m.finished[n].expires.Before(now) || m.bytes > m.maxBytes) {
		o := m.finished[n]
		if m.entries[o.id] == o {
			delete(m.entries, o.id)
		}
		m.bytes -= o.size
		n++
	}
	if n > 0 {
		clear(m.finished[:n])
		m.finished = m.finished[n:]
	}
}

// len is how many mutations are remembered or running.
func (m *memory) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// sessions is the set of agent streams this process held, by Welcome's
// session id: a retried mutation that does not name only these may have
// run in another agent process.
type sessions struct {
	mu   sync.Mutex
	ids  map[string]bool
	list []string
	// ended are streams that closed and that no subscriber has been told
	// of yet (Hello.ended_sessions).
	ended []string
}

const maxSessions = 4096

func (s *sessions) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	if s.ids[id] {
		return
	}
	s.ids[id] = true
	s.list = append(s.list, id)
	if len(s.list) > maxSessions {
		// Forgetting an old one can only refuse a retry, never run one twice.
		delete(s.ids, s.list[0])
		s.list = s.list[1:]
	}
}

// own reports whether every id is a stream of this process.
func (s *sessions) own(ids []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if !s.ids[id] {
			return false
		}
	}
	return true
}

// end records that stream id closed.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = append(s.ended, id)
	if len(s.ended) > 64 {
		s.ended = s.ended[len(s.ended)-64:]
	}
}

// unreported is what the next Hello tells; reported drops those once a
// subscriber welcomed that Hello.
func (s *sessions) unreported() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ended...)
}

func (s *sessions) reported(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	told := map[string]bool{}
	for _, id := range ids {
		told[id] = true
	}
	kept := s.ended[:0]
	for _, id := range s.ended {
		if !told[id] {
			kept = append(kept, id)
		}
	}
	s.ended = kept
}
