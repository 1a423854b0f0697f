// Package k6 holds the k6 scripts platform teams run against a deployed
// Tether, one per scenario of the Go load driver. k6 is AGPL-licensed and
// neither imported nor installed here: this test runs each script in goja
// (the MIT-licensed JavaScript engine k6 embeds), with k6's modules
// replaced by recorders, and checks that it parses, is open-loop, keeps the
// driver's thresholds, and sends the driver's requests.
package k6

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dop251/goja"

	"github.com/tether-dev/tether/loadtest/driver"
)

// sent is one request a script made.
type sent struct {
	Method, URL, Token, ContentType string
}

// script runs name with env and returns its options and its default
// function, and what that function sent so far.
type script struct {
	options map[string]any
	run     func()
	sent    *[]sent
	vm      *goja.Runtime
}

// imports are the lines a script may import; k6's own modules are
// replaced, lib.js is inlined.
var importLine = regexp.MustCompile(`(?m)^import .* from '([^']+)';\n`)

func load(t *testing.T, name string, env map[string]string) *script {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lib, err := os.ReadFile("lib.js")
	if err != nil {
		t.Fatal(err)
	}
	code := importLine.ReplaceAllStringFunc(string(src), func(line string) string {
		switch from := importLine.FindStringSubmatch(line)[1]; from {
		case "k6/http", "k6":
			return ""
		case "./lib.js":
			// lib.js's own k6 imports are stood in for the same way.
			return unexport(importLine.ReplaceAllString(string(lib), ""))
		default:
			t.Fatalf("%s imports %s: only k6, k6/http and ./lib.js are stood in for", name, from)
			return ""
		}
	})
	code = strings.Replace(unexport(code), "export default function", "function __default", 1)
	if strings.Contains(code, "export ") {
		t.Fatalf("%s exports something this test does not know", name)
	}
	vm := goja.New()
	var out []sent
	record := func(method string) func(goja.FunctionCall) goja.Value {
		return func(c goja.FunctionCall) goja.Value {
			s := sent{Method: method, URL: c.Argument(0).String()}
			p := c.Argument(1)
			if method != "GET" {
				p = c.Argument(2)
			}
			if obj := p.ToObject(vm); obj != nil {
				if h := obj.Get("headers"); h != nil && !goja.IsUndefined(h) {
					headers := h.ToObject(vm)
					if a := headers.Get("Authorization"); a != nil {
						s.Token = strings.TrimPrefix(a.String(), "Bearer ")
					}
					if ct := headers.Get("Content-Type"); ct != nil {
						s.ContentType = ct.String()
					}
				}
			}
			out = append(out, s)
			return vm.ToValue(map[string]any{"status": 200})
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(vm.Set("__ENV", env))
	must(vm.Set("__VU", 1))
	must(vm.Set("http", map[string]any{"get": record("GET"), "post": record("POST"), "patch": record("PATCH")}))
	must(vm.Set("check", func(goja.FunctionCall) goja.Value { return vm.ToValue(true) }))
	if _, err := vm.RunScript(name, code); err != nil {
		t.Fatalf("%s does not run: %v", name, err)
	}
	opts, _ := vm.Get("options").Export().(map[string]any)
	fn, ok := goja.AssertFunction(vm.Get("__default"))
	if !ok || opts == nil {
		t.Fatalf("%s has no options or no default function", name)
	}
	return &script{options: opts, sent: &out, vm: vm, run: func() {
		if _, err := fn(goja.Undefined()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}}
}

// unexport turns a module's exports into plain declarations.
func unexport(code string) string {
	return regexp.MustCompile(`(?m)^export (const|function) `).ReplaceAllString(code, "$1 ")
}

// shape replaces what a request picks at random (cluster, object, the
// name it creates) with placeholders.
func shape(method, url string) string {
	url = regexp.MustCompile(`/clusters/sim-\d{5}/`).ReplaceAllString(url, "/clusters/CLUSTER/")
	url = regexp.MustCompile(`/cm-\d{5}`).ReplaceAllString(url, "/OBJECT")
	return method + " " + url
}

const gateway = "https://gw.test"

var env = map[string]string{"TETHER_URL": gateway, "TETHER_TOKENS": "t1,t2,t3", "CLUSTERS": "200", "RATE": "100", "DURATION": "120s"}

// target is the driver's view of the same fleet.
var target = driver.Target{GatewayURL: gateway, Clusters: []string{"sim-00000", "sim-00199"}, Tokens: []string{"t1"}}

func scenario(t *testing.T, s *script) map[string]any {
	t.Helper()
	scs, _ := s.options["scenarios"].(map[string]any)
	if len(scs) != 1 {
		t.Fatalf("%d scenarios, want one", len(scs))
	}
	for _, sc := range scs {
		return sc.(map[string]any)
	}
	return nil
}

// thresholds are the driver's: a run passes only if no request failed.
func checkThresholds(t *testing.T, s *script) {
	t.Helper()
	th, _ := s.options["thresholds"].(map[string]any)
	if fmt.Sprint(th["http_req_failed"]) != "[rate<0.001]" || fmt.Sprint(th["checks"]) != "[rate>0.999]" {
		t.Errorf("thresholds %v: want no failed request", th)
	}
}

func TestLoadScripts(t *testing.T) {
	for _, tc := range []struct {
		file     string
		executor string
		mix      map[driver.Kind]int
	}{
		{"steady.js", "constant-arrival-rate", driver.Steady(100, time.Minute).Mix},
		{"mixed.js", "constant-arrival-rate", driver.Mixed(100, time.Minute).Mix},
		{"spike.js", "ramping-arrival-rate", driver.Spike(100, time.Minute).Mix},
		{"storm.js", "constant-arrival-rate", driver.Steady(100, time.Minute).Mix},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s := load(t, tc.file, env)
			// Open loop: an arrival-rate executor starts iterations on
			// schedule whatever the earlier ones did.
			if ex := scenario(t, s)["executor"]; ex != tc.executor {
				t.Fatalf("executor %v, want %s", ex, tc.executor)
			}
			checkThresholds(t, s)
			if mix := s.vm.Get("mix"); mix != nil {
				got := map[driver.Kind]int{}
				for k, v := range mix.Export().(map[string]any) {
					got[driver.Kind(k)] = int(v.(int64))
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.mix) {
					t.Fatalf("mix %v, the driver's %v", got, tc.mix)
				}
			}
			// The requests: the same shapes as the driver's, for each kind
			// the driver sends, from the users given, over the clusters.
			want := map[string]string{}
			for k := range tc.mix {
				r := target.Request(k, 1, time.Now())
				want[shape(r.Method, r.URL)] = r.ContentType
			}
			got := map[string]int{}
			for range 2000 {
				s.run()
			}
			for _, r := range *s.sent {
				sh := shape(r.Method, r.URL)
				ct, ok := want[sh]
				if !ok {
					t.Fatalf("%s %s: the driver sends no such request (it sends %v)", r.Method, r.URL, keys(want))
				}
				if r.ContentType != ct || (r.Token != "t1" && r.Token != "t2" && r.Token != "t3") {
					t.Fatalf("%s %s: content type %q (want %q), token %q", r.Method, r.URL, r.ContentType, ct, r.Token)
				}
				got[sh]++
			}
			if len(got) != len(want) {
				t.Fatalf("sent %v, the driver sends %v", keys(got), keys(want))
			}
		})
	}
}

// spike.js jumps by the driver's factor for as long, from as far in.
func TestSpikeMatchesTheDriver(t *testing.T) {
	s := load(t, "spike.js", env)
	d := 120 * time.Second
	want := driver.Spike(100, d)
	sc := scenario(t, s)
	stages, _ := sc["stages"].([]any)
	if len(stages) != 5 {
		t.Fatalf("%d stages", len(stages))
	}
	stage := func(i int) (int64, string) {
		st := stages[i].(map[string]any)
		return st["target"].(int64), st["duration"].(string)
	}
	base, at := stage(0)
	top, _ := stage(1)
	_, lasting := stage(2)
	if sc["startRate"].(int64) != 100 || base != 100 || float64(top) != 100*want.SpikeFactor ||
		at != fmt.Sprintf("%ds", int(want.SpikeAt.Seconds())) || lasting != fmt.Sprintf("%ds", int(want.SpikeFor.Seconds())) {
		t.Fatalf("stages %v: want ×%g from %v for %v", stages, want.SpikeFactor, want.SpikeAt, want.SpikeFor)
	}
}

// watches.js holds the driver's watches: the same URLs, users in turn.
func TestWatchesMatchTheDriver(t *testing.T) {
	for _, vu := range []int{1, 2, 200} {
		e := map[string]string{"__unused": ""}
		for k, v := range env {
			e[k] = v
		}
		s := load(t, "watches.js", e)
		if err := s.vm.Set("__VU", vu); err != nil {
			t.Fatal(err)
		}
		checkThresholds(t, s)
		if sc := scenario(t, s); sc["executor"] != "per-vu-iterations" || sc["vus"].(int64) != 1000 {
			t.Fatalf("scenario %v: want 1000 VUs, one watch each", sc)
		}
		s.run()
		got := (*s.sent)[0]
		clusters := make([]string, 200)
		for i := range clusters {
			clusters[i] = fmt.Sprintf("sim-%05d", i)
		}
		tg := driver.Target{GatewayURL: gateway, Clusters: clusters}
		if want := tg.WatchURL(vu-1, 120); got.URL != want || got.Token != []string{"t1", "t2", "t3"}[(vu-1)%3] {
			t.Fatalf("VU %d: %s as %s, the driver's %s", vu, got.URL, got.Token, want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// soak.js runs the mixed load and holds the watches at once, for the
// duration given (30 minutes unless told), as the driver's soak scenario.
func TestSoakMatchesTheDriver(t *testing.T) {
	e := map[string]string{"WATCHES": "50"}
	for k, v := range env {
		e[k] = v
	}
	for _, duration := range []string{"120s", ""} {
		e["DURATION"] = duration
		s := load(t, "soak.js", e)
		checkThresholds(t, s)
		scs, _ := s.options["scenarios"].(map[string]any)
		mixed, _ := scs["mixed"].(map[string]any)
		watches, _ := scs["watches"].(map[string]any)
		want := duration
		if want == "" {
			want = "30m"
		}
		if len(scs) != 2 || mixed["executor"] != "constant-arrival-rate" || mixed["duration"] != want || mixed["rate"].(int64) != 100 ||
			watches["executor"] != "per-vu-iterations" || watches["vus"].(int64) != 50 {
			t.Fatalf("scenarios %v", scs)
		}
		for name, sc := range scs {
			exec := sc.(map[string]any)["exec"].(string)
			fn, ok := goja.AssertFunction(s.vm.Get(exec))
			if !ok {
				t.Fatalf("scenario %s runs %q, which is no function", name, exec)
			}
			if _, err := fn(goja.Undefined()); err != nil {
				t.Fatalf("%s: %v", exec, err)
			}
		}
		kinds := map[string]bool{}
		for _, r := range *s.sent {
			kinds[r.Method] = true
		}
		if !kinds["GET"] {
			t.Fatalf("sent %v", *s.sent)
		}
	}
}
