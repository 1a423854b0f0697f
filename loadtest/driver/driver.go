// Package driver is Tether's load driver: open-loop load through a
// gateway, as a platform team's capacity test sends it. Requests leave at
// the scenario's rate whether or not earlier ones were answered (vegeta's
// attacker with its pacers), so latency under overload shows instead of
// being hidden by a client that waits (no coordinated omission). Every
// latency goes into an HDR histogram (HdrHistogram), by kind of request.
//
// A scenario picks, for each request, a cluster at random among the
// target's, a user (token) at random, and a kind by weight: a GET of one
// object, a LIST, a create, a patch. The clusters answer as agentsim's
// simulated ones do (ConfigMaps cm-00000... in any namespace).
package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Target is where the load goes.
type Target struct {
	// GatewayURL is the gateway's base URL; CAFile its CA (empty: the
	// system's roots). Gateways, if set, are several, each request going
	// to one at random (a load balancer's part).
	GatewayURL, CAFile string
	Gateways           []string
	// Tokens are the users' bearer tokens: each request takes one at
	// random, so the load comes from many users, as it does in a fleet.
	Tokens []string
	// Clusters are the cluster ids requests spread over at random.
	Clusters []string
	// Namespace the objects are in (default "load"); Objects how many
	// each cluster has (agentsim --objects, default 10).
	Namespace string
	Objects   int
}

// gateway is where the next request goes.
func (t Target) gateway() string {
	if len(t.Gateways) > 0 {
		return t.Gateways[rand.IntN(len(t.Gateways))]
	}
	return t.GatewayURL
}

// Kind is a kind of request.
type Kind string

const (
	Get    Kind = "get"
	List   Kind = "list"
	Create Kind = "create"
	Patch  Kind = "patch"
)

// Scenario is what load to send.
type Scenario struct {
	Name string
	// Rate is the requests per second offered; Duration how long.
	Rate     float64
	Duration time.Duration
	// Mix weighs the kinds of requests (default: GETs only).
	Mix map[Kind]int
	// Spike multiplies the rate by SpikeFactor from SpikeAt for SpikeFor
	// (0: no spike).
	SpikeFactor       float64
	SpikeAt, SpikeFor time.Duration
	// Timeout bounds each request (default 30 s): one unanswered by then
	// counts as failed.
	Timeout time.Duration
}

// Steady, Mixed and Spike are the scenarios at rate for d.
func Steady(rate float64, d time.Duration) Scenario {
	return Scenario{Name: "steady", Rate: rate, Duration: d, Mix: map[Kind]int{Get: 1}}
}

func Mixed(rate float64, d time.Duration) Scenario {
	return Scenario{Name: "mixed", Rate: rate, Duration: d, Mix: map[Kind]int{Get: 60, List: 25, Create: 5, Patch: 10}}
}

func Spike(rate float64, d time.Duration) Scenario {
	at := d / 3
	return Scenario{Name: "spike", Rate: rate, Duration: d, Mix: map[Kind]int{Get: 1}, SpikeFactor: 10, SpikeAt: at, SpikeFor: min(30*time.Second, d/3)}
}

// Second is one second of a run: what was sent in it and what came of it.
type Second struct {
	Offered        float64 // the pacer's rate
	Sent, OK, Fail int
	// P50 and P99 of the requests sent in this second.
	P50, P99 time.Duration
}

// Result is what a run measured.
type Result struct {
	Scenario Scenario
	Start    time.Time
	Elapsed  time.Duration
	// Latency by kind, and of all requests together, in microseconds.
	Latency map[Kind]*hdrhistogram.Histogram
	All     *hdrhistogram.Histogram
	// Codes counts answers by HTTP status (0: no answer: Errors says why).
	Codes  map[int]int
	Errors map[string]int
	// Timeline is second by second.
	Timeline []Second
	// RetryAfter counts 429 and 503 answers that said when to come back.
	RetryAfter int
	// First is the latency of the first request to each cluster, Later of
	// the rest: what a cluster costs the first time it is reached.
	First, Later *hdrhistogram.Histogram
	touched      map[string]bool
}

// Sent is how many requests went out.
func (r *Result) Sent() int64 { return r.All.TotalCount() }

// Failed is how many got no 2xx.
func (r *Result) Failed() int {
	n := 0
	for code, c := range r.Codes {
		if code < 200 || code > 299 {
			n += c
		}
	}
	return n
}

// newHistogram records from 1 µs to 5 minutes with 3 significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3)
}

// Run sends sc to t until sc.Duration has passed or ctx ends.
func Run(ctx context.Context, t Target, sc Scenario) (*Result, error) {
	if t.gateway() == "" || len(t.Tokens) == 0 || len(t.Clusters) == 0 {
		return nil, errors.New("driver: a gateway URL, tokens and clusters are required")
	}
	if sc.Rate <= 0 || sc.Duration <= 0 {
		return nil, errors.New("driver: a positive rate and duration are required")
	}
	if t.Namespace == "" {
		t.Namespace = "load"
	}
	if t.Objects <= 0 {
		t.Objects = 10
	}
	if sc.Timeout <= 0 {
		sc.Timeout = 30 * time.Second
	}
	if len(sc.Mix) == 0 {
		sc.Mix = map[Kind]int{Get: 1}
	}
	client, err := Client(t.CAFile, sc.Timeout)
	if err != nil {
		return nil, err
	}
	pick, err := newPicker(sc.Mix)
	if err != nil {
		return nil, err
	}
	res := &Result{Scenario: sc, Start: time.Now(), Latency: map[Kind]*hdrhistogram.Histogram{}, All: newHistogram(),
		Codes: map[int]int{}, Errors: map[string]int{}, First: newHistogram(), Later: newHistogram(), touched: map[string]bool{}}
	for k := range sc.Mix {
		res.Latency[k] = newHistogram()
	}
	var pacer vegeta.Pacer = vegeta.ConstantPacer{Freq: int(sc.Rate), Per: time.Second}
	if sc.SpikeFactor > 1 {
		pacer = spikePacer{base: sc.Rate, factor: sc.SpikeFactor, at: sc.SpikeAt, until: sc.SpikeAt + sc.SpikeFor}
	}
	var seq atomic.Uint64
	targeter := func(tg *vegeta.Target) error {
		r := t.Request(pick(), seq.Add(1), res.Start)
		tg.Method, tg.URL, tg.Body = r.Method, r.URL, r.Body
		tg.Header = http.Header{"Authorization": {"Bearer " + t.Tokens[rand.IntN(len(t.Tokens))]}}
		if r.ContentType != "" {
			tg.Header.Set("Content-Type", r.ContentType)
		}
		return nil
	}
	attacker := vegeta.NewAttacker(vegeta.Client(client), vegeta.Workers(64), vegeta.MaxBody(1<<20), vegeta.Timeout(sc.Timeout))
	results := attacker.Attack(targeter, pacer, sc.Duration, sc.Name)
	perSecond := map[int]*secondAcc{}
	done := ctx.Done()
	for {
		select {
		case <-done:
			attacker.Stop()
			done = nil
			continue
		case r, ok := <-results:
			if !ok {
				res.Elapsed = time.Since(res.Start)
				res.Timeline = timeline(perSecond, pacer, min(res.Elapsed, sc.Duration))
				return res, nil
			}
			res.record(r, perSecond)
		}
	}
}

// Request is one request of a kind, without its user.
type Request struct {
	Method, URL, ContentType string
	Body                     []byte
}

// ListLimit is how many objects a list asks for.
const ListLimit = 10

// Request is the request of kind that Run sends as its n-th of a run that
// started at start, to a cluster and an object at random (the k6 scripts
// send the same: loadtest/k6).
func (t Target) Request(kind Kind, n uint64, start time.Time) Request {
	ns := t.Namespace
	if ns == "" {
		ns = "load"
	}
	objects := max(t.Objects, 1)
	cluster := t.Clusters[rand.IntN(len(t.Clusters))]
	base := strings.TrimSuffix(t.gateway(), "/") + "/clusters/" + cluster + "/api/v1/namespaces/" + ns + "/configmaps"
	obj := fmt.Sprintf("cm-%05d", rand.IntN(objects))
	switch kind {
	case List:
		return Request{Method: http.MethodGet, URL: fmt.Sprintf("%s?limit=%d", base, ListLimit)}
	case Create:
		return Request{Method: http.MethodPost, URL: base, ContentType: "application/json",
			Body: fmt.Appendf(nil, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"load-%d-%d"},"data":{"k":"v"}}`, start.UnixNano(), n)}
	case Patch:
		return Request{Method: http.MethodPatch, URL: base + "/" + obj, ContentType: "application/merge-patch+json",
			Body: []byte(`{"metadata":{"annotations":{"load":"1"}}}`)}
	}
	return Request{Method: http.MethodGet, URL: base + "/" + obj}
}

// WatchURL is the i-th watch of RunWatches, lasting secs.
func (t Target) WatchURL(i, secs int) string {
	ns := t.Namespace
	if ns == "" {
		ns = "load"
	}
	return strings.TrimSuffix(t.gateways(i), "/") + "/clusters/" + t.Clusters[i%len(t.Clusters)] + "/api/v1/namespaces/" + ns +
		"/configmaps?watch=true&timeoutSeconds=" + strconv.Itoa(secs)
}

// gateways is the i-th request's gateway when they are taken in turn.
func (t Target) gateways(i int) string {
	if len(t.Gateways) > 0 {
		return t.Gateways[i%len(t.Gateways)]
	}
	return t.GatewayURL
}

// secondAcc gathers one second of results.
type secondAcc struct {
	sent, ok, fail int
	h              *hdrhistogram.Histogram
}

func (res *Result) record(r *vegeta.Result, perSecond map[int]*secondAcc) {
	us := max(int64(r.Latency/time.Microsecond), 1)
	_ = res.All.RecordValue(us)
	if h := res.Latency[kindOf(r.Method, r.URL)]; h != nil {
		_ = h.RecordValue(us)
	}
	if cluster := clusterOf(r.URL); res.touched[cluster] {
		_ = res.Later.RecordValue(us)
	} else {
		res.touched[cluster] = true
		_ = res.First.RecordValue(us)
	}
	res.Codes[int(r.Code)]++
	if r.Error != "" {
		res.Errors[shorten(r.Error)]++
	}
	if (r.Code == http.StatusTooManyRequests || r.Code == http.StatusServiceUnavailable) && r.Headers.Get("Retry-After") != "" {
		res.RetryAfter++
	}
	s := int(r.Timestamp.Sub(res.Start) / time.Second)
	acc := perSecond[s]
	if acc == nil {
		acc = &secondAcc{h: newHistogram()}
		perSecond[s] = acc
	}
	acc.sent++
	if r.Code >= 200 && r.Code <= 299 {
		acc.ok++
	} else {
		acc.fail++
	}
	_ = acc.h.RecordValue(us)
}

// clusterOf is the cluster a request's URL names.
func clusterOf(url string) string {
	_, rest, _ := strings.Cut(url, "/clusters/")
	cluster, _, _ := strings.Cut(rest, "/")
	return cluster
}

// kindOf tells a request's kind from its method and URL, as Run made it.
func kindOf(method, url string) Kind {
	switch {
	case method == http.MethodPost:
		return Create
	case method == http.MethodPatch:
		return Patch
	case strings.Contains(url, "?limit="):
		return List
	}
	return Get
}

// shorten keeps an error's kind, not its addresses and ids, so the count
// stays small.
func shorten(e string) string {
	if i := strings.LastIndex(e, ": "); i >= 0 {
		e = e[i+2:]
	}
	// HTTP/2 names the stream ("stream ID 1001; INTERNAL_ERROR; received
	// from peer"): one kind of error, not one per stream.
	return streamID.ReplaceAllString(e, "")
}

var streamID = regexp.MustCompile(`stream ID \d+; `)

func timeline(perSecond map[int]*secondAcc, p vegeta.Pacer, d time.Duration) []Second {
	// Whole seconds of the run: a request sent in the last moment's
	// rounding counts in the last second, not in a second of its own.
	n := max(int((d+time.Second-1)/time.Second), 1)
	for k, acc := range perSecond {
		if k >= n {
			last := perSecond[n-1]
			if last == nil {
				last = &secondAcc{h: newHistogram()}
				perSecond[n-1] = last
			}
			last.sent, last.ok, last.fail = last.sent+acc.sent, last.ok+acc.ok, last.fail+acc.fail
			last.h.Merge(acc.h)
			delete(perSecond, k)
		}
	}
	out := make([]Second, n)
	for i := range out {
		out[i].Offered = p.Rate(time.Duration(i)*time.Second + time.Second/2)
		if acc := perSecond[i]; acc != nil {
			out[i].Sent, out[i].OK, out[i].Fail = acc.sent, acc.ok, acc.fail
			out[i].P50 = time.Duration(acc.h.ValueAtQuantile(50)) * time.Microsecond
			out[i].P99 = time.Duration(acc.h.ValueAtQuantile(99)) * time.Microsecond
		}
	}
	return out
}

// newPicker picks a kind at random by weight.
func newPicker(mix map[Kind]int) (func() Kind, error) {
	var kinds []Kind
	for k, w := range mix {
		switch k {
		case Get, List, Create, Patch:
		default:
			return nil, fmt.Errorf("driver: no request kind %q", k)
		}
		if w < 0 {
			return nil, fmt.Errorf("driver: kind %s has a negative weight", k)
		}
		for range w {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return nil, errors.New("driver: the mix weighs nothing")
	}
	return func() Kind { return kinds[rand.IntN(len(kinds))] }, nil
}

// spikePacer sends base requests/s, and factor times that from at until
// until.
type spikePacer struct {
	base, factor float64
	at, until    time.Duration
}

func (p spikePacer) Rate(elapsed time.Duration) float64 {
	if elapsed >= p.at && elapsed < p.until {
		return p.base * p.factor
	}
	return p.base
}

// Pace: the hits due by elapsed are those of the base rate over the whole
// time, plus the extra ones of the spike over the part of it that passed.
func (p spikePacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	due := func(t time.Duration) float64 {
		n := p.base * t.Seconds()
		if t > p.at {
			n += p.base * (p.factor - 1) * (min(t, p.until) - p.at).Seconds()
		}
		return n
	}
	if float64(hits) < due(elapsed) {
		return 0, false
	}
	rate := p.Rate(elapsed)
	return time.Duration(float64(time.Second) / rate), false
}

// Client is an HTTP/2 client trusting caFile (empty: the system's roots),
// many connections' worth: HTTP/2 multiplexes the requests of a run on
// the connections to the gateway.
func Client(caFile string, timeout time.Duration) (*http.Client, error) {
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("driver: the gateway's CA: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("driver: %s holds no certificate", caFile)
		}
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}
