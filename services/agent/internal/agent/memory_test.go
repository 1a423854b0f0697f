package agent

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestMemoryRunsEachMutationOnce(t *testing.T) {
	m := newMemory(time.Minute, 1<<20)
	o, first := m.begin("r1")
	if !first {
		t.Fatal("a new request id is not first")
	}
	again, first := m.begin("r1")
	if first || again != o {
		t.Fatal("a second attempt while the first runs would run it too")
	}
	select {
	case <-again.done:
		t.Fatal("done before the first attempt finished")
	default:
	}
	m.finish(o, 201, http.Header{"Content-Type": {"application/json"}}, []byte(`{"kind":"ConfigMap"}`))
	<-again.done
	if !again.ran || again.status != 201 || string(again.body) != `{"kind":"ConfigMap"}` {
		t.Fatalf("the second attempt sees %+v", again)
	}
	if _, first := m.begin("r1"); first {
		t.Fatal("a finished mutation is forgotten while it should be remembered")
	}
}

// A mutation whose body broke off never ran: the next attempt runs it.
func TestMemoryAbandonedMutationRunsAgain(t *testing.T) {
	m := newMemory(time.Minute, 1<<20)
	o, _ := m.begin("r1")
	waiting, _ := m.begin("r1")
	m.abandon(o)
	<-waiting.done
	if waiting.ran {
		t.Fatal("an abandoned attempt counts as run")
	}
	if _, first := m.begin("r1"); !first {
		t.Fatal("after an abandoned attempt the next is not first")
	}
}

func TestMemoryForgetsAfterTTLAndBeyondItsSize(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newMemory(time.Minute, 64<<10)
	m.now = func() time.Time { return now }
	o, _ := m.begin("old")
	m.finish(o, 200, nil, nil)
	now = now.Add(2 * time.Minute)
	if _, first := m.begin("old"); !first {
		t.Fatal("remembered past its time")
	}
	// Over the size, the oldest results go first; a result too large to
	// keep keeps its status only.
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		o, _ := m.begin(id)
		m.finish(o, 200, nil, make([]byte, 7<<10))
	}
	if m.bytes > m.maxBytes {
		t.Fatalf("%d bytes held, limit %d", m.bytes, m.maxBytes)
	}
	if _, first := m.begin("a"); !first {
		t.Fatal("the oldest result survived a full memory")
	}
	if o, first := m.begin("j"); first || !o.ran {
		t.Fatal("the newest result was dropped")
	}
	big, _ := m.begin("big")
	m.finish(big, 201, nil, make([]byte, 1<<20))
	if !big.bodyDropped || big.body != nil || big.status != 201 {
		t.Fatalf("an over-large result: %+v", big)
	}
}

func TestSessions(t *testing.T) {
	var s sessions
	s.add("s1")
	s.add("s2")
	for _, tt := range []struct {
		ids  []string
		want bool
	}{{nil, true}, {[]string{"s1"}, true}, {[]string{"s1", "s2"}, true}, {[]string{"s1", "other"}, false}} {
		if got := s.own(tt.ids); got != tt.want {
			t.Errorf("own(%v) = %v", tt.ids, got)
		}
	}
	s.end("s1")
	s.end("s2")
	told := s.unreported()
	s.end("s3") // ends while that Hello is on its way
	s.reported(told)
	if got := s.unreported(); !reflect.DeepEqual(got, []string{"s3"}) {
		t.Fatalf("still to report: %v", got)
	}
}
