package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/kube"
)

// A planned restart of each subscriber in turn fails no request: the
// subscriber tells the agent's stream there to move (GoAway), the agent
// connects its next stream first, then the old stream stops taking
// requests, finishes those in flight and closes. The agent never has fewer
// streams than it holds, every create runs once, and a watch open all along
// sees every event once.
func TestSubscriberRestartFailsNoRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, "e2e-rolling")
	for _, sub := range subscribers() {
		time.Sleep(time.Second)
		if err := env.stack.Restart(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	r := l.stop(t)
	t.Logf("during the restart of every subscriber: %s", r)
	if r.failed != 0 {
		t.Fatalf("%d requests failed during planned restarts", r.failed)
	}
	if r.lowest < 2 {
		t.Fatalf("the agent held %d stream(s) at one point: a planned restart must never cost one", r.lowest)
	}
	devStillServed(t)
}

// A subscriber that dies (SIGKILL) loses the requests it held. The reads
// among them go out again once they are found lost, the mutations go out
// again with their request ids and the agent answers each with its first
// result, and a watch goes on from its last event on the agent's other
// stream: no request fails, no create runs twice, the watch sees every
// event once.
func TestRequestsSurviveASubscriberCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	retries := sum(t, "tether_router_retries_total", routers()...)
	resumes := sum(t, `tether_router_watch_resumes_total{result="resumed"}`, routers()...)
	replayed := sum(t, `tether_agent_mutations_total{result="replayed"}`, "agent")
	l := startLoad(t, "e2e-crash")
	crashEachSubscriber(ctx, t)
	time.Sleep(time.Second)
	r := l.stop(t)
	t.Logf("across a crash of each subscriber: %s; sent again %v, watches resumed %v, mutations answered with their first result %v",
		r, sum(t, "tether_router_retries_total", routers()...)-retries,
		sum(t, `tether_router_watch_resumes_total{result="resumed"}`, routers()...)-resumes,
		sum(t, `tether_agent_mutations_total{result="replayed"}`, "agent")-replayed)
	if r.failed != 0 {
		t.Fatalf("%d requests failed across subscriber crashes", r.failed)
	}
	devStillServed(t)
}

// crashEachSubscriber kills each subscriber in turn (SIGKILL), leaves it
// dead long enough for the routers' peer probes to find its streams gone,
// starts it again and waits until the agent holds both its streams.
func crashEachSubscriber(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, sub := range subscribers() {
		time.Sleep(2 * time.Second)
		if err := env.stack.Process(sub).Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second)
		if err := env.stack.Restart(ctx, sub); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, func() bool { return gauge(t, "agent", "tether_agent_stream_connected") >= 2 })
	}
}

func subscribers() []string { return replicas("subscriber") }
func routers() []string     { return replicas("router") }

func replicas(service string) []string {
	out := []string{service}
	for i := 1; i < len(env.stack.GatewayURLs); i++ {
		out = append(out, fmt.Sprintf("%s-%d", service, i))
	}
	return out
}

// sum adds a series over services (0 where it is absent).
func sum(t *testing.T, series string, services ...string) float64 {
	t.Helper()
	n := 0.0
	for _, s := range services {
		v, _ := metric(t, s, series)
		n += v
	}
	return n
}

// load is 6 clients reading and 2 creating ConfigMaps through every
// gateway, one watch of those ConfigMaps from the moment before the first,
// and the agent's stream count sampled all along.
type load struct {
	ns     string
	client *http.Client
	// done stops the clients; watchDone the watch, once it has seen the
	// last of their creates.
	done, watchDone chan struct{}
	wg, watchWG     sync.WaitGroup
	lowest          atomic.Int64

	mu       sync.Mutex
	reads    int
	created  []string // names whose create returned 201
	failed   int
	events   []watched
	watchRV  string // where the watch began
	watchErr error
}

type watched struct{ typ, name, rv string }

type loadResult struct {
	reads, creates, failed, events int
	lowest                         int64
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d reads and %d creates succeeded, %d requests failed, the watch saw %d events, fewest agent streams %d",
		r.reads, r.creates, r.failed, r.events, r.lowest)
}

func startLoad(t *testing.T, ns string) *load {
	t.Helper()
	must(t, kubeconfig(t, "admin"), "", "create", "namespace", ns)
	l := &load{ns: ns, client: gatewayClient(t), done: make(chan struct{}), watchDone: make(chan struct{})}
	l.lowest.Store(1 << 30)
	l.openWatch(t)
	for w := range 8 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			gw := env.stack.GatewayURLs[w%len(env.stack.GatewayURLs)]
			for n := 0; ; n++ {
				select {
				case <-l.done:
					return
				default:
				}
				if w < 2 {
					l.create(t, gw, fmt.Sprintf("w%d-%d", w, n))
				} else {
					l.read(t, gw)
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if v, found := metric(t, "agent", "tether_agent_stream_connected"); found && int64(v) < l.lowest.Load() {
				l.lowest.Store(int64(v))
			}
		}
	}()
	return l
}

func (l *load) fail(t *testing.T, what string, resp *http.Response, err error) {
	l.mu.Lock()
	l.failed++
	l.mu.Unlock()
	if err != nil {
		t.Logf("%s failed: %v", what, err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	t.Logf("%s failed: %d %s", what, resp.StatusCode, b)
}

func (l *load) read(t *testing.T, gw string) {
	req, _ := http.NewRequest(http.MethodGet, gw+"/clusters/dev/api/v1/namespaces/default", nil)
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	resp, err := l.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		l.fail(t, "read", resp, err)
	} else {
		l.mu.Lock()
		l.reads++
		l.mu.Unlock()
	}
	if resp != nil {
		resp.Body.Close()
	}
}

func (l *load) create(t *testing.T, gw, name string) {
	body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"k":"v"}}`, name)
	req, _ := http.NewRequest(http.MethodPost, gw+"/clusters/dev/api/v1/namespaces/"+l.ns+"/configmaps", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		l.fail(t, "create "+name, resp, err)
	} else {
		l.mu.Lock()
		l.created = append(l.created, name)
		l.mu.Unlock()
	}
	if resp != nil {
		resp.Body.Close()
	}
}

// openWatch watches the namespace's ConfigMaps from its current
// resourceVersion, as client-go's reflector does after a list.
func (l *load) openWatch(t *testing.T) {
	t.Helper()
	resp := call(t, http.MethodGet, "/clusters/dev/api/v1/namespaces/"+l.ns+"/configmaps", token("admin"), nil, nil)
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	err := json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	l.watchRV = list.Metadata.ResourceVersion
	req, _ := http.NewRequest(http.MethodGet, env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/"+l.ns+"/configmaps?watch=true&resourceVersion="+l.watchRV, nil)
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	wresp, err := l.client.Do(req)
	if err != nil || wresp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %v %v", wresp, err)
	}
	l.watchWG.Add(1)
	go func() {
		defer l.watchWG.Done()
		defer wresp.Body.Close()
		go func() { <-l.watchDone; wresp.Body.Close() }()
		sc := bufio.NewScanner(wresp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			ev, err := kube.DecodeWatchEvent(sc.Bytes())
			if err != nil {
				l.mu.Lock()
				l.watchErr = err
				l.mu.Unlock()
				return
			}
			l.mu.Lock()
			l.events = append(l.events, watched{ev.Type, ev.Name, ev.ResourceVersion})
			l.mu.Unlock()
		}
		select {
		case <-l.watchDone:
		default:
			l.mu.Lock()
			l.watchErr = fmt.Errorf("the watch ended: %v", sc.Err())
			l.mu.Unlock()
		}
	}()
}

// stop ends the load and checks, against the kube-apiserver itself, what
// every survival test promises: each create that succeeded exists, none
// reached the kube-apiserver twice, and the watch saw each ConfigMap's
// creation exactly once, in order, without breaking.
func (l *load) stop(t *testing.T) loadResult {
	t.Helper()
	close(l.done)
	l.wg.Wait()

	// Every ConfigMap in the namespace, straight from the kube-apiserver.
	out := must(t, env.direct, "", "get", "configmaps", "-n", l.ns, "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct{ Name, ResourceVersion string } `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	exists := map[string]string{}
	var want []watched
	for _, it := range list.Items {
		if it.Metadata.Name == "kube-root-ca.crt" {
			continue
		}
		exists[it.Metadata.Name] = it.Metadata.ResourceVersion
		want = append(want, watched{"ADDED", it.Metadata.Name, it.Metadata.ResourceVersion})
	}
	sort.Slice(want, func(i, j int) bool { return rvLess(want[i].rv, want[j].rv) })
	// The watch must see the last create before it is stopped.
	if len(want) > 0 {
		last := want[len(want)-1].rv
		waitFor(t, 30*time.Second, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.watchErr != nil || len(l.events) > 0 && rvAtLeast(l.events[len(l.events)-1].rv, last)
		})
	}
	close(l.watchDone)
	l.watchWG.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	r := loadResult{reads: l.reads, creates: len(l.created), failed: l.failed, events: len(l.events), lowest: l.lowest.Load()}
	if l.watchErr != nil {
		t.Errorf("the watch broke: %v", l.watchErr)
	}
	for _, name := range l.created {
		if _, ok := exists[name]; !ok {
			t.Errorf("create of %s succeeded, but it does not exist", name)
		}
	}
	// Each create reached the kube-apiserver once: its audit log has one
	// create per name, and none under the same request id twice.
	audit, err := env.stack.Kube.Audit()
	if err != nil {
		t.Fatal(err)
	}
	perName, perID := map[string]int{}, map[string]int{}
	for _, ev := range audit {
		if ev.Verb != "create" || ev.ObjectRef == nil || ev.ObjectRef.Namespace != l.ns || ev.ObjectRef.Resource != "configmaps" {
			continue
		}
		// Only a create that reached storage ran: created, or found its
		// name taken. One whose body broke off on the way (500) never did.
		if code := ev.ResponseStatus.GetCode(); code >= 300 && code != http.StatusConflict {
			continue
		}
		perName[ev.ObjectRef.Name]++
		perID[ev.AuditID]++
	}
	for name, n := range perName {
		if n > 1 {
			t.Errorf("%s was created %d times at the kube-apiserver", name, n)
		}
	}
	for id, n := range perID {
		if n > 1 {
			t.Errorf("request %s reached the kube-apiserver %d times", id, n)
		}
	}
	// The watch saw exactly the creations, once each, in order (and the
	// controller manager's own ConfigMap, which is not ours).
	got := withoutRootCA(l.events)
	if len(got) != len(want) {
		t.Errorf("the watch saw %d events, want %d (one per ConfigMap)", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
			break
		}
	}
	return r
}

func withoutRootCA(evs []watched) []watched {
	var out []watched
	for _, ev := range evs {
		if ev.name != "kube-root-ca.crt" {
			out = append(out, ev)
		}
	}
	return out
}

// resourceVersions are etcd revisions: ordered as numbers here, which
// clients must not rely on, but a test of one cluster may.
func rvLess(a, b string) bool {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return x < y
}

func rvAtLeast(a, b string) bool { return !rvLess(a, b) }
