package chaos

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/kube"
)

// load is the steady mixed load: clients creating uniquely named
// ConfigMaps, reading them back, listing them, and 50 watches of them,
// spread over every cluster and both gateways. Each gateway has a client
// (and so connections) of its own: a gateway that dies breaks only its
// own.
type load struct {
	gateways []string
	clients  []*http.Client
	token    string
	stop     chan struct{}
	wg       sync.WaitGroup
	seq      atomic.Int64

	mu       sync.Mutex
	phase    string
	counts   map[string]int      // "create ok", "get 503", ...
	created  map[string][]string // cluster: names whose create returned 201
	failures []failure
	watches  []*watcher
}

// failure is a request that did not succeed.
type failure struct {
	what    string
	phase   string // when it was sent
	gateway int
	start   time.Time
	at      time.Time // when it failed
	code    int       // a Status's code; 0 for a transport error
	reason  string    // the Status's reason, or the transport error
}

func (f failure) String() string {
	if f.code == 0 {
		return fmt.Sprintf("%s via gateway %d during %q: %s", f.what, f.gateway, f.phase, f.reason)
	}
	return fmt.Sprintf("%s via gateway %d during %q: %d %s", f.what, f.gateway, f.phase, f.code, f.reason)
}

func namespace(cluster string) string { return "chaos-" + cluster }

func newLoad(t *testing.T) *load {
	t.Helper()
	pem, err := os.ReadFile(fleet.stack.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	l := &load{gateways: fleet.stack.GatewayURLs, token: fleet.stack.Users["admin"].Token, stop: make(chan struct{}),
		phase: "warm-up", counts: map[string]int{}, created: map[string][]string{}}
	for range l.gateways {
		l.clients = append(l.clients, &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		}})
	}
	return l
}

func (l *load) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

// start runs creators, readers and the watches until stopClients.
func (l *load) start(t *testing.T, creators, readers, watches int) {
	for i := range watches {
		cluster := fleet.clusters[i%len(fleet.clusters)]
		w := &watcher{l: l, cluster: cluster, id: i}
		w.begin(t)
		l.watches = append(l.watches, w)
	}
	for i := range creators + readers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				cluster := fleet.clusters[r.IntN(len(fleet.clusters))]
				gw := r.IntN(len(l.gateways))
				ok := true
				switch {
				case i < creators:
					ok = l.create(gw, cluster)
				case r.IntN(3) == 0:
					ok = l.list(gw, cluster)
				default:
					ok = l.get(gw, cluster, r)
				}
				if !ok {
					// As a client would: a moment before the next try, not a
					// spin against a gateway that is down.
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
}

// stopClients ends the creators and readers; the watches go on until
// they have seen every create.
func (l *load) stopClients() {
	close(l.stop)
	l.wg.Wait()
}

// do sends one request and records what came of it: success, a Status,
// or a transport error.
func (l *load) do(what string, gw int, method, path string, body []byte, want int) ([]byte, bool) {
	l.mu.Lock()
	phase := l.phase
	l.mu.Unlock()
	verb := strings.Fields(what)[0]
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, _ := http.NewRequest(method, l.gateways[gw]+path, rd)
	req.Header.Set("Authorization", "Bearer "+l.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := l.clients[gw].Do(req)
	var out []byte
	if err == nil {
		out, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := time.Now()
	switch {
	case err != nil:
		l.counts[verb+" transport error"]++
		l.failures = append(l.failures, failure{what: what, phase: phase, gateway: gw, start: start, at: at, reason: err.Error()})
		return nil, false
	case resp.StatusCode != want:
		st, serr := parseStatus(out)
		if serr != nil {
			l.counts[verb+" not a Status"]++
			l.failures = append(l.failures, failure{what: what, phase: phase, gateway: gw, start: start, at: at, code: resp.StatusCode,
				reason: fmt.Sprintf("not a Status (%v): %.200s", serr, out)})
			return nil, false
		}
		l.counts[fmt.Sprintf("%s %d", verb, st.Code)]++
		l.failures = append(l.failures, failure{what: what, phase: phase, gateway: gw, start: start, at: at, code: st.Code, reason: st.Reason + ": " + st.Message})
		return nil, false
	}
	l.counts[verb+" ok"]++
	return out, true
}

func (l *load) create(gw int, cluster string) bool {
	name := fmt.Sprintf("cm-%d", l.seq.Add(1))
	body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"gateway":"%d"}}`, name, gw)
	_, ok := l.do("create "+cluster+"/"+name, gw, http.MethodPost, "/clusters/"+cluster+"/api/v1/namespaces/"+namespace(cluster)+"/configmaps", []byte(body), http.StatusCreated)
	if ok {
		l.mu.Lock()
		l.created[cluster] = append(l.created[cluster], name)
		l.mu.Unlock()
	}
	return ok
}

func (l *load) get(gw int, cluster string, r *rand.Rand) bool {
	l.mu.Lock()
	names := l.created[cluster]
	name := ""
	if len(names) > 0 {
		name = names[r.IntN(len(names))]
	}
	l.mu.Unlock()
	if name == "" {
		return true
	}
	_, ok := l.do("get "+cluster+"/"+name, gw, http.MethodGet, "/clusters/"+cluster+"/api/v1/namespaces/"+namespace(cluster)+"/configmaps/"+name, nil, http.StatusOK)
	return ok
}

func (l *load) list(gw int, cluster string) bool {
	_, ok := l.do("list "+cluster, gw, http.MethodGet, "/clusters/"+cluster+"/api/v1/namespaces/"+namespace(cluster)+"/configmaps?limit=50", nil, http.StatusOK)
	return ok
}

// status is what the test reads of a Kubernetes Status.
type status struct {
	Kind    string `json:"kind"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func parseStatus(b []byte) (status, error) {
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	if st.Kind != "Status" || st.Code == 0 {
		return st, errors.New("no kind Status with a code")
	}
	return st, nil
}

// watcher is one watch of a cluster's ConfigMaps, from a list's
// resourceVersion, as client-go's reflector watches: when its stream
// breaks it watches again from the last event it saw, through the next
// gateway.
type watcher struct {
	l       *load
	cluster string
	id      int
	startRV string

	mu      sync.Mutex
	events  []event
	lastRV  string
	again   []time.Time // when the stream broke and the client watched again
	failed  error       // what it could not get past (a 410, a broken event)
	stopped chan struct{}
	done    chan struct{}
}

type event struct{ typ, name, rv string }

func (w *watcher) begin(t *testing.T) {
	t.Helper()
	out, ok := w.l.do("list "+w.cluster, 0, http.MethodGet, "/clusters/"+w.cluster+"/api/v1/namespaces/"+namespace(w.cluster)+"/configmaps", nil, http.StatusOK)
	if !ok {
		t.Fatalf("listing %s before watching failed", w.cluster)
	}
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatal(err)
	}
	w.startRV, w.lastRV = list.Metadata.ResourceVersion, list.Metadata.ResourceVersion
	w.stopped, w.done = make(chan struct{}), make(chan struct{})
	go w.run()
}

func (w *watcher) run() {
	defer close(w.done)
	gw := w.id % len(w.l.gateways)
	for attempt := 0; ; attempt++ {
		select {
		case <-w.stopped:
			return
		default:
		}
		if attempt > 0 {
			gw = (gw + 1) % len(w.l.gateways)
			time.Sleep(100 * time.Millisecond)
		}
		broke, err := w.watch(gw)
		if err != nil {
			w.mu.Lock()
			w.failed = err
			w.mu.Unlock()
			return
		}
		if broke {
			w.mu.Lock()
			w.again = append(w.again, time.Now())
			w.mu.Unlock()
		}
	}
}

// watch holds one watch request until it ends: broke reports a stream
// that failed (not ended by the test), err what cannot be gone on from.
func (w *watcher) watch(gw int) (broke bool, err error) {
	w.mu.Lock()
	rv := w.lastRV
	w.mu.Unlock()
	req, _ := http.NewRequest(http.MethodGet, w.l.gateways[gw]+"/clusters/"+w.cluster+"/api/v1/namespaces/"+namespace(w.cluster)+
		"/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion="+rv, nil)
	req.Header.Set("Authorization", "Bearer "+w.l.token)
	client := *w.l.clients[gw]
	client.Timeout = 0 // a watch lasts
	resp, err := client.Do(req)
	if err != nil {
		return true, nil
	}
	defer resp.Body.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-w.stopped:
			resp.Body.Close()
		case <-finished:
		}
	}()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		st, serr := parseStatus(b)
		if serr == nil && st.Code == http.StatusGone {
			return false, fmt.Errorf("watching again from %s: 410 Gone: events were lost", rv)
		}
		if serr != nil {
			return false, fmt.Errorf("watch answered %d with no Status: %.200s", resp.StatusCode, b)
		}
		return true, nil // a Status (503 while a hop heals): watch again
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		ev, err := kube.DecodeWatchEvent(sc.Bytes())
		if err != nil {
			return false, err
		}
		if ev.Type == "ERROR" {
			return false, fmt.Errorf("error event: %s", sc.Text())
		}
		w.mu.Lock()
		if ev.Type != "BOOKMARK" {
			w.events = append(w.events, event{ev.Type, ev.Name, ev.ResourceVersion})
		}
		w.lastRV = ev.ResourceVersion
		w.mu.Unlock()
	}
	select {
	case <-w.stopped:
		return false, nil
	default:
	}
	return true, nil
}

// seen is the last resourceVersion the watch saw.
func (w *watcher) seen() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastRV
}

func (w *watcher) stop() {
	close(w.stopped)
	<-w.done
}
