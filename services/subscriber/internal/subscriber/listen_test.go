package subscriber

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Requests reach a cluster's streams in turn; a stream that blocks holds
// up only its own cluster, whose requests beyond the queue's bound are
// refused at once; and a cluster with no stream left refuses.
func TestListeners(t *testing.T) {
	nc := startNATS(t)
	ls := newListeners(nc)
	var mu sync.Mutex
	got := map[*session]int{}
	release := make(chan struct{})
	ls.open = func(s *session, m *nats.Msg) {
		if s.cluster == "slow" {
			<-release
		}
		mu.Lock()
		got[s]++
		mu.Unlock()
		_ = m.Respond([]byte("taken"))
	}
	fast1, fast2, slow := &session{cluster: "fast"}, &session{cluster: "fast"}, &session{cluster: "slow"}
	for _, s := range []*session{fast1, fast2, slow} {
		if err := ls.join(s); err != nil {
			t.Fatal(err)
		}
	}
	request := func(cluster string) (string, error) {
		subj, _ := subject.Requests(cluster)
		m, err := nc.Request(subj, nil, 5*time.Second)
		if err != nil {
			return "", err
		}
		if string(m.Data) == "taken" {
			return "taken", nil
		}
		f, err := tunnel.Decode(m.Data)
		if err != nil {
			return "", err
		}
		return f.GetReset_().GetCode().String(), nil
	}
	// The slow cluster's stream blocks on its first request; its queue
	// fills with the next ones.
	subj, _ := subject.Requests("slow")
	inbox := nats.NewInbox()
	refusals, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for range queueLimit + 2 {
		if err := nc.PublishRequest(subj, inbox, nil); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := refusals.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no refusal beyond the queue's bound: %v", err)
	} else if f, _ := tunnel.Decode(m.Data); f.GetReset_().GetCode().String() != "RESET_CODE_REFUSED" {
		t.Fatalf("beyond the bound: %v", f)
	}
	for range 10 {
		if r, err := request("fast"); err != nil || r != "taken" {
			t.Fatalf("fast cluster while slow blocks: %q, %v", r, err)
		}
	}
	mu.Lock()
	if got[fast1] != 5 || got[fast2] != 5 {
		t.Errorf("fast cluster's streams took %d and %d of 10", got[fast1], got[fast2])
	}
	mu.Unlock()
	close(release)
	ls.leave(slow)
	if r, err := request("slow"); err != nil || r != "RESET_CODE_REFUSED" {
		// No subscription is left: NATS says so.
		if err != nats.ErrNoResponders {
			t.Fatalf("cluster without streams: %q, %v", r, err)
		}
	}
}
