package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/stack"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// fault is one thing that goes wrong, and what it may cost: the gateway
// whose clients see their connections break (transport errors are
// allowed only for those), and whether watches through it may break
// (a dead gateway or router holds the client's stream; the client then
// watches again, as client-go does).
type fault struct {
	name    string
	run     func(t *testing.T)
	gateway int  // -1: none
	breaks  bool // watches through the dead process break
	// began and ended: from the fault until the fleet settled again.
	began, ended time.Time
}

// during is the fault whose window overlaps a request that was in
// flight from start to end, if any: a request sent during a fault that
// failed just after the fleet settled is that fault's.
func during(faults []fault, start, end time.Time) *fault {
	for i := range faults {
		if !end.Before(faults[i].began) && !start.After(faults[i].ended) {
			return &faults[i]
		}
	}
	return nil
}

// The chaos test of issue 6: under a steady mixed load (creates of
// uniquely named ConfigMaps, gets, lists and 50 open watches across 20
// clusters and both gateways) it kills with SIGKILL and restarts, one at a
// time, a subscriber, a router, a gateway, a NATS node and an agent, cuts
// a subscriber off from NATS for 30 s, and restarts every subscriber in
// turn (SIGTERM). Then, checked against the kube-apiserver itself: every
// create that succeeded exists once and none ran twice (the audit log),
// every watch saw every event once, in order, every failed request failed
// with a Status, the planned restarts failed nothing, the registry matched
// the subscribers within a heartbeat period after each fault, and every
// service is back to its goroutines.
func TestChaos(t *testing.T) {
	s := fleet.stack
	for _, c := range fleet.clusters {
		out, err := exec.Command(kubectl(t), "--kubeconfig", s.Kube.AdminKubeconfig, "create", "namespace", namespace(c)).CombinedOutput()
		if err != nil {
			t.Fatalf("creating namespace %s: %v: %s", namespace(c), err, out)
		}
	}
	settle(t, "the start")
	time.Sleep(3 * time.Second) // each namespace's kube-root-ca.crt, before the watches
	baseline := goroutines(t)

	l := newLoad(t)
	l.start(t, 3, 3, 50)
	time.Sleep(5 * time.Second)
	retries0, resumes0, replayed0 := sumAll(t, "tether_router_retries_total"), sumAll(t, `tether_router_watch_resumes_total{result="resumed"}`), sumAll(t, `tether_agent_mutations_total{result="replayed"}`)

	kill := func(name string) func(t *testing.T) {
		return func(t *testing.T) {
			p := s.Process(name)
			if err := p.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-p.Done()
			time.Sleep(3 * time.Second)
			restart(t, name)
		}
	}
	faults := []fault{
		{name: "SIGKILL of a subscriber", run: kill("subscriber-1"), gateway: -1},
		{name: "SIGKILL of a router", run: kill("router"), gateway: -1, breaks: true},
		{name: "SIGKILL of a gateway", run: kill("gateway-1"), gateway: 1, breaks: true},
		{name: "SIGKILL of a NATS node", run: kill("natsd-1"), gateway: -1},
		{name: "SIGKILL of an agent", run: kill(stack.AgentName("c05")), gateway: -1},
		{name: "a subscriber cut off from NATS for 30 s", gateway: -1, run: func(t *testing.T) {
			if err := s.Partition(partitioned, true); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Second)
			if err := s.Partition(partitioned, false); err != nil {
				t.Fatal(err)
			}
		}},
		{name: plannedRestarts, gateway: -1, run: func(t *testing.T) {
			for _, name := range []string{"subscriber", "subscriber-1", partitioned} {
				restart(t, name)
				settle(t, "the restart of "+name)
			}
		}},
	}
	if only := os.Getenv("TETHER_CHAOS_FAULTS"); only != "" {
		// To look at some faults alone: a comma-separated list of
		// prefixes of their names.
		var keep []fault
		for _, f := range faults {
			for _, p := range strings.Split(only, ",") {
				if strings.HasPrefix(f.name, p) {
					keep = append(keep, f)
					break
				}
			}
		}
		faults = keep
	}
	var report []string
	started := time.Now()
	caughtUp := make([]time.Duration, len(faults))
	for i := range faults {
		f := &faults[i]
		l.setPhase(f.name)
		f.began = time.Now()
		f.run(t)
		f.ended = settle(t, f.name)
		took := registryCatchesUp(t)
		caughtUp[i] = took
		report = append(report, fmt.Sprintf("%-42s healed in %5.1fs; the registry matched the subscribers %.1fs later", f.name, f.ended.Sub(f.began).Seconds(), took.Seconds()))
		if took > heartbeat {
			t.Errorf("after %s the registry matched the subscribers only %v after the fleet settled; want within a heartbeat period (%v)", f.name, took.Round(10*time.Millisecond), heartbeat)
		}
		time.Sleep(2 * time.Second)
	}
	l.setPhase("cool-down")
	time.Sleep(2 * time.Second)
	l.stopClients()
	retries, resumes, replayed := sumAll(t, "tether_router_retries_total")-retries0, sumAll(t, `tether_router_watch_resumes_total{result="resumed"}`)-resumes0,
		sumAll(t, `tether_agent_mutations_total{result="replayed"}`)-replayed0

	c := check(t, l, faults)
	for _, w := range l.watches {
		w.stop()
	}
	for _, cl := range l.clients {
		cl.CloseIdleConnections()
	}

	// Every service back to its goroutines, once the load is gone.
	time.Sleep(5 * time.Second)
	after := goroutines(t)
	// A subscriber's goroutines go with the agent streams it holds, which
	// move between subscribers by design: the subscribers are compared in
	// sum (the same 40 streams before and after).
	for _, m := range []map[string]int{baseline, after} {
		for _, name := range []string{"subscriber", "subscriber-1", "subscriber-2"} {
			m["subscribers"] += m[name]
			delete(m, name)
		}
	}
	var grown []string
	for name, n := range baseline {
		if m, ok := after[name]; ok && m > n+max(10, n/5) {
			grown = append(grown, fmt.Sprintf("%s %d -> %d", name, n, m))
		}
	}
	sort.Strings(grown)
	if len(grown) > 0 {
		t.Errorf("goroutines above their baseline once the load stopped: %s", strings.Join(grown, ", "))
	}

	t.Logf("chaos against 3 NATS nodes, 2 gateways, 2 routers, 3 subscribers, %d agents:\n  %s\n%s\n  requests sent again %v, watches resumed %v, mutations answered with their first result %v; services back to their goroutines: %d of %d",
		len(fleet.clusters), strings.Join(report, "\n  "), c, retries, resumes, replayed, len(baseline)-len(grown), len(baseline))
	if path := os.Getenv("TETHER_CHAOS_REPORT"); path != "" {
		md := markdown(t, started, faults, caughtUp, c, [3]float64{retries, resumes, replayed}, len(baseline)-len(grown), len(baseline))
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			t.Errorf("writing the report: %v", err)
		}
	}
}

// countsTable writes a section of counts, by key in order.
func countsTable(b *strings.Builder, title, what string, counts map[string]int) {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(b, "\n## %s\n\n| %s | count |\n|---|---:|\n", title, what)
	for _, k := range keys {
		fmt.Fprintf(b, "| %s | %d |\n", k, counts[k])
	}
}

// markdown is the run's report for people: what ran, each fault, and
// every count the checks were made on.
func markdown(t *testing.T, started time.Time, faults []fault, caughtUp []time.Duration, c summary, behind [3]float64, back, services int) string {
	var b strings.Builder
	commit, err := exec.Command("git", "-C", fleet.root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		commit = []byte("unknown")
	}
	dirty := ""
	if out, _ := exec.Command("git", "-C", fleet.root, "status", "--porcelain", "--untracked-files=no").Output(); len(out) > 0 {
		dirty = " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "# Chaos: Tether's fleet under faults\n\n")
	fmt.Fprintf(&b, "- Date: %s\n- Tether: commit %s%s\n- Machine: %d CPUs, %s\n", started.UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(commit)), dirty, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "- Command: `make chaos` (`go test -run TestChaos ./dev/chaos`, TETHER_CHAOS_REPORT=bench/results/chaos.md)\n")
	fmt.Fprintf(&b, "- Fleet: 3 NATS nodes (JetStream R3), 2 gateways, 2 routers, 3 subscribers (one on a test host), %d agents with two streams each, one real kube-apiserver; TLS on every hop\n", len(fleet.clusters))
	fmt.Fprintf(&b, "- Load: 3 clients creating uniquely named ConfigMaps, 3 getting and listing them, 50 open watches, across every cluster and both gateways\n\n")
	fmt.Fprintf(&b, "## Faults, one at a time\n\n| fault | healed in | registry matched the subscribers after |\n|---|---:|---:|\n")
	for i, f := range faults {
		fmt.Fprintf(&b, "| %s | %.1f s | %.1f s |\n", f.name, f.ended.Sub(f.began).Seconds(), caughtUp[i].Seconds())
	}
	fmt.Fprintf(&b, "\n## Checked against the kube-apiserver\n\n| check | count |\n|---|---:|\n")
	for _, row := range []struct {
		what string
		n    int
	}{
		{"creates that succeeded", c.created},
		{"of them existing in the kube-apiserver", c.existing},
		{"created more than once (objects, and the audit log by request id)", c.createdTwice},
		{"watch events delivered", c.watchEvents},
		{"watches broken by a killed gateway or router, watched again by the client", c.watchesAgain},
		{"watches that missed, repeated or reordered an event", c.watchBad},
		{"failed requests with a Status, each during a fault", c.statusFailures},
		{"transport errors, each on a killed gateway's own connections", c.transportAllowed},
		{"failures outside those rules (the test fails on any)", len(c.violations)},
	} {
		fmt.Fprintf(&b, "| %s | %d |\n", row.what, row.n)
	}
	countsTable(&b, "Requests", "request", c.counts)
	countsTable(&b, "Failures by fault", "fault: request and answer", c.byFault)
	fmt.Fprintf(&b, "\n## Behind the scenes\n\n| what | count |\n|---|---:|\n| requests the routers sent again | %.0f |\n| watches resumed from their last event | %.0f |\n| mutations answered with their first result | %.0f |\n| services back to their goroutines once the load stopped | %d of %d |\n",
		behind[0], behind[1], behind[2], back, services)
	if t.Failed() {
		fmt.Fprintf(&b, "\n**This run failed its checks**: see the test's output.\n")
	}
	return b.String()
}

// summary is what check found.
type summary struct {
	counts                              map[string]int
	byFault                             map[string]int
	created, existing, createdTwice     int
	watchEvents, watchesAgain, watchBad int
	statusFailures, transportAllowed    int
	violations                          []string
}

func (c summary) String() string {
	keys := make([]string, 0, len(c.counts))
	for k := range c.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.counts[k]))
	}
	faults := make([]string, 0, len(c.byFault))
	for k, n := range c.byFault {
		faults = append(faults, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(faults)
	return fmt.Sprintf("  failures by fault:\n    %s\n  requests: %s\n  creates that succeeded %d, of them existing %d, created more than once %d\n  watch events %d, watches that broke with a dead gateway or router and were watched again %d, watches that missed, repeated or reordered an event %d\n  failed requests: with a Status %d, transport errors on the killed gateway's own connections %d, anything else %d",
		strings.Join(faults, "\n    "), strings.Join(parts, ", "), c.created, c.existing, c.createdTwice, c.watchEvents, c.watchesAgain, c.watchBad, c.statusFailures, c.transportAllowed, len(c.violations))
}

// check holds the load's record against the kube-apiserver.
func check(t *testing.T, l *load, faults []fault) summary {
	t.Helper()
	s := fleet.stack
	l.mu.Lock()
	c := summary{counts: l.counts}
	created := map[string][]string{}
	for k, v := range l.created {
		created[k] = append([]string(nil), v...)
	}
	failures := append([]failure(nil), l.failures...)
	l.mu.Unlock()

	// What exists, straight from the kube-apiserver.
	exists := map[string]map[string]string{}
	for _, cl := range fleet.clusters {
		out, err := exec.Command(kubectl(t), "--kubeconfig", s.Kube.AdminKubeconfig, "get", "configmaps", "-n", namespace(cl), "-o", "json").Output()
		if err != nil {
			t.Fatalf("listing %s: %v", namespace(cl), err)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name, ResourceVersion string } `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatal(err)
		}
		exists[cl] = map[string]string{}
		for _, it := range list.Items {
			if it.Metadata.Name != "kube-root-ca.crt" {
				exists[cl][it.Metadata.Name] = it.Metadata.ResourceVersion
			}
		}
	}
	for cl, names := range created {
		for _, n := range names {
			c.created++
			if _, ok := exists[cl][n]; ok {
				c.existing++
			} else {
				t.Errorf("create of %s/%s succeeded, but it does not exist", cl, n)
			}
		}
	}
	// Nothing reached the kube-apiserver twice: one create per name, and
	// none under the same request id twice.
	audit, err := s.Kube.Audit()
	if err != nil {
		t.Fatal(err)
	}
	perName, perID := map[string]int{}, map[string]int{}
	for _, ev := range audit {
		if ev.Verb != "create" || ev.ObjectRef == nil || ev.ObjectRef.Resource != "configmaps" || !strings.HasPrefix(ev.ObjectRef.Namespace, "chaos-") {
			continue
		}
		// Only a create that reached storage ran: created, or found its
		// name taken. One whose body broke off on the way (500, no name)
		// never did.
		if code := ev.ResponseStatus.GetCode(); code >= 300 && code != http.StatusConflict {
			continue
		}
		perName[ev.ObjectRef.Namespace+"/"+ev.ObjectRef.Name]++
		perID[ev.AuditID]++
	}
	for name, n := range perName {
		if n > 1 {
			c.createdTwice++
			t.Errorf("%s reached the kube-apiserver as a create %d times", name, n)
		}
	}
	for id, n := range perID {
		if n > 1 {
			t.Errorf("request %s reached the kube-apiserver %d times", id, n)
		}
	}

	// Every watch, once it has seen the last create, saw exactly the
	// creates after its start, in order.
	deadline := time.Now().Add(time.Minute)
	for _, w := range l.watches {
		want := expected(exists[w.cluster], w.startRV)
		for len(want) > 0 && rvLess(w.seen(), want[len(want)-1].rv) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		w.mu.Lock()
		got := append([]event(nil), w.events...)
		again, failed := append([]time.Time(nil), w.again...), w.failed
		w.mu.Unlock()
		c.watchEvents += len(got)
		c.watchesAgain += len(again)
		bad := failed != nil || len(got) != len(want)
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				bad = true
				t.Errorf("watch %d of %s: event %d is %+v, want %+v", w.id, w.cluster, i, got[i], want[i])
				break
			}
		}
		if failed != nil {
			t.Errorf("watch %d of %s: %v", w.id, w.cluster, failed)
		}
		if len(got) != len(want) {
			t.Errorf("watch %d of %s saw %d events, want %d", w.id, w.cluster, len(got), len(want))
		}
		for _, at := range again {
			if f := during(faults, at, at); f == nil || !f.breaks {
				bad = true
				t.Errorf("watch %d of %s broke at %s, where it should have gone on (%s)", w.id, w.cluster, at.Format(time.StampMilli), faultName(f))
			}
		}
		if bad {
			c.watchBad++
		}
	}

	// Every failure was a Status, but for the killed gateway's own
	// connections; and the planned restarts failed nothing.
	c.byFault = map[string]int{}
	for _, f := range failures {
		in := during(faults, f.start, f.at)
		c.byFault[fmt.Sprintf("%s: %s", faultName(in), kindOf(f))]++
		switch {
		case in == nil:
			// Nothing was wrong while it was in flight: a Status is no
			// excuse then.
			c.violations = append(c.violations, f.String())
			t.Errorf("failed with no fault in its way: %s", f)
		case f.code >= 400 && f.code < 500:
			// A fault may leave Tether unable to answer (5xx), never
			// answering in the cluster's name: every client here may do
			// what it asks (a 403 "replayed" was a read a dead router's
			// successor could not try again).
			c.violations = append(c.violations, f.String())
			t.Errorf("failed with a client error during a fault: %s", f)
		case f.code != 0:
			c.statusFailures++
			if in != nil && in.name == plannedRestarts {
				c.violations = append(c.violations, f.String())
				t.Errorf("failed during the planned restarts: %s", f)
			}
		case in != nil && in.gateway == f.gateway:
			c.transportAllowed++
		default:
			c.violations = append(c.violations, f.String())
			t.Errorf("failed without a Status: %s", f)
		}
	}
	return c
}

const plannedRestarts = "a planned restart of every subscriber"

func faultName(f *fault) string {
	if f == nil {
		return "between faults"
	}
	return f.name
}

// kindOf names a failure for the report: its verb and code, or
// "transport error".
func kindOf(f failure) string {
	verb := strings.Fields(f.what)[0]
	if f.code == 0 {
		return verb + " transport error"
	}
	return fmt.Sprintf("%s %d %s", verb, f.code, strings.SplitN(f.reason, ":", 2)[0])
}

// expected is what a watch from rv sees of a namespace that only had
// ConfigMaps created: each one newer than rv, in order.
func expected(objs map[string]string, rv string) []event {
	var out []event
	for name, v := range objs {
		if rvLess(rv, v) {
			out = append(out, event{"ADDED", name, v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return rvLess(out[i].rv, out[j].rv) })
	return out
}

// rvLess orders resourceVersions as the etcd revisions they are here;
// clients must not, but a test of one kube-apiserver may.
func rvLess(a, b string) bool {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return x < y
}

// restart starts a service again (SIGTERM first if it still runs) and
// waits until it is ready.
func restart(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := fleet.stack.Restart(ctx, name); err != nil {
		t.Fatalf("restarting %s: %v", name, err)
	}
}

// settle waits until every agent holds its two streams and every service
// is ready, and returns when.
func settle(t *testing.T, after string) time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	lastSaid := time.Now()
	for {
		missing := ""
		for _, c := range fleet.clusters {
			if v, ok := metric(stack.AgentName(c), "tether_agent_stream_connected"); !ok || v != 2 {
				missing = fmt.Sprintf("the agent of %s holds %v streams", c, v)
				break
			}
		}
		if missing == "" {
			for _, name := range services() {
				if !ready(name) {
					missing = name + " is not ready"
					break
				}
			}
		}
		if missing == "" {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the fleet did not settle within 2 minutes: %s", after, missing)
		}
		if time.Since(lastSaid) > 5*time.Second {
			t.Logf("after %s, still waiting: %s", after, missing)
			lastSaid = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// registryCatchesUp is how long after now agent-registry's view matches
// the fleet: every stream it counts alive is one a subscriber holds, per
// subscriber, and each cluster has as many as its agent says.
func registryCatchesUp(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		why := registryDiffers(t)
		if why == "" {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the registry's view does not match the fleet 30s after it settled: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func registryDiffers(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := fleet.stack.Clusters().ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{}))
	if err != nil {
		return err.Error()
	}
	now := time.Now()
	bySub, byCluster := map[string]int{}, map[string]int{}
	for _, c := range resp.Msg.GetClusters() {
		for _, st := range c.GetAgent().GetStreams() {
			// Heartbeats are kept to the second.
			if now.Sub(time.Unix(st.GetLastHeartbeatUnix(), 0)) <= heartbeatTimeout+time.Second {
				bySub[st.GetSubscriberId()]++
				byCluster[c.GetId()]++
			}
		}
	}
	for i, name := range []string{"subscriber", "subscriber-1", "subscriber-2"} {
		v, _ := metric(name, "tether_agent_streams")
		if bySub[fmt.Sprintf("subscriber-%d", i)] != int(v) {
			return fmt.Sprintf("%s holds %v streams, the registry counts %d", name, v, bySub[fmt.Sprintf("subscriber-%d", i)])
		}
	}
	for _, c := range fleet.clusters {
		v, _ := metric(stack.AgentName(c), "tether_agent_stream_connected")
		if byCluster[c] != int(v) {
			return fmt.Sprintf("the agent of %s holds %v streams, the registry counts %d", c, v, byCluster[c])
		}
	}
	return ""
}

// services are every Tether process of the fleet.
func services() []string {
	var out []string
	for _, name := range fleet.stack.Names() {
		if _, ok := fleet.stack.Admin[name]; ok {
			out = append(out, name)
		}
	}
	return out
}

func ready(name string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + fleet.stack.Admin[name] + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// goroutines is each service's goroutine count.
func goroutines(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, name := range services() {
		if v, ok := metric(name, "go_goroutines"); ok {
			out[name] = int(v)
		}
	}
	return out
}

func sumAll(t *testing.T, series string) float64 {
	t.Helper()
	n := 0.0
	for _, name := range services() {
		v, _ := metric(name, series)
		n += v
	}
	return n
}

// metric reads one series from a service's /metrics.
func metric(service, series string) (float64, bool) { return fleet.stack.Metric(service, series) }

// kubectl is the one a user has, or the one built with the control plane.
func kubectl(t *testing.T) string {
	t.Helper()
	return fleet.kubectl
}
