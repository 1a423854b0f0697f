package e2e

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/assertion/assertiontest"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// sender is a compromised hop behind the gateway: it puts an Open on the
// way to the agent of dev and returns the Status that came back.
type sender interface {
	send(t *testing.T, open *tetherv1.Open) kstatus.Status
}

// TestCompromisedHopsActAsNobody is a rogue process holding a router's
// real NATS credentials, then one holding a subscriber's certificate that
// an agent connects to (ADR 011). Each sends requests for cluster dev with
// an identity it could lay hands on: none, one its own root signed, a real
// gateway signature of another cluster's request, of another request, an
// expired one, one replayed, and a real one for system:masters. The agent
// refuses each with a Status, and the kube-apiserver's own audit log shows
// none of them.
func TestCompromisedHopsActAsNobody(t *testing.T) {
	must(t, kubeconfig(t, "admin"), "", "create", "configmap", "hostile-target", "--from-literal=k=v")
	t.Cleanup(func() {
		_, _, _ = kubectl(t, kubeconfig(t, "admin"), "", "delete", "configmap", "hostile-target", "--ignore-not-found")
	})
	for _, hop := range []struct {
		name string
		new  func(t *testing.T) sender
	}{
		{"router", func(t *testing.T) sender { return newRogueRouter(t) }},
		{"subscriber", func(t *testing.T) sender { return newRogueSubscriber(t) }},
	} {
		t.Run(hop.name, func(t *testing.T) { actAsNobody(t, hop.new(t), "replay-victim-"+hop.name) })
	}
}

func actAsNobody(t *testing.T, r sender, victimName string) {
	must(t, kubeconfig(t, "admin"), "", "create", "configmap", victimName, "--from-literal=k=v")
	gateway, err := assertion.LoadSigner(env.stack.Identity.GatewayKey)
	if err != nil {
		t.Fatal(err)
	}
	// A gateway key the rogue certified with a root of its own.
	rogueGateway, _ := assertiontest.Keys(t)

	const target = "/api/v1/namespaces/default/configmaps/hostile-target"
	// del is the DELETE of path the rogue sends, as request id.
	del := func(id, path string) *tetherv1.Open {
		return &tetherv1.Open{RequestId: id, ClusterId: "dev", Method: "DELETE", Path: path, End: true, Window: 1 << 20,
			Tenants: []string{"acme"}, Trace: map[string]string{}}
	}
	signed := func(s *assertion.Signer, cluster, id, method, path string, groups []string, at time.Time) *tetherv1.SignedIdentity {
		si, err := s.Sign(&tetherv1.IdentityAssertion{
			Identity: &tetherv1.Identity{User: "admin", Groups: groups}, Tenants: []string{"acme"},
			ClusterId: cluster, RequestId: id, Method: method, Path: path,
			IssuedUnixMilli: at.UnixMilli(), ExpiresUnixMilli: at.Add(time.Minute).UnixMilli(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return si
	}
	admins := []string{"tether:cluster-admins"}
	now := time.Now()
	id := func(name string) string { return "hostile-" + name + "-" + rand.Text()[:8] }
	var refused []string
	for _, tc := range []struct {
		name string
		open func(id string) *tetherv1.Open
		want string // in the Status message
	}{
		{"unsigned", func(id string) *tetherv1.Open { return del(id, target) }, "no signed identity"},
		{"signed by a key of another root", func(id string) *tetherv1.Open {
			o := del(id, target)
			o.SignedIdentity = signed(rogueGateway, "dev", id, "DELETE", target, admins, now)
			return o
		}, "not certified by the identity root"},
		{"a real signature of another cluster's request", func(id string) *tetherv1.Open {
			o := del(id, target)
			o.SignedIdentity = signed(gateway, "other", id, "DELETE", target, admins, now)
			return o
		}, "signed for cluster"},
		{"a real signature of another request", func(id string) *tetherv1.Open {
			o := del(id, target)
			o.SignedIdentity = signed(gateway, "dev", id, "GET", "/api/v1/namespaces/default/configmaps", admins, now)
			return o
		}, "not this method and path"},
		{"an expired signature", func(id string) *tetherv1.Open {
			o := del(id, target)
			o.SignedIdentity = signed(gateway, "dev", id, "DELETE", target, admins, now.Add(-3*time.Minute))
			return o
		}, "expired"},
		{"a real signature for system:masters", func(id string) *tetherv1.Open {
			o := del(id, target)
			o.SignedIdentity = signed(gateway, "dev", id, "DELETE", target, []string{"system:masters"}, now)
			return o
		}, `does not impersonate "system:masters"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rid := id(strings.ReplaceAll(tc.name, " ", "-"))
			refused = append(refused, rid)
			st := r.send(t, tc.open(rid))
			if st.Code != 403 || !strings.Contains(st.Message, tc.want) {
				t.Fatalf("answered %d %q, want 403 saying %q", st.Code, st.Message, tc.want)
			}
		})
	}

	// A request the gateway really signed runs once; the same bytes again
	// are a replay.
	replayed := id("replay")
	victim := "/api/v1/namespaces/default/configmaps/" + victimName
	open := del(replayed, victim)
	open.SignedIdentity = signed(gateway, "dev", replayed, "DELETE", victim, admins, time.Now())
	if st := r.send(t, open); st.Code != 200 {
		t.Fatalf("the genuine request: %d %s", st.Code, st.Message)
	}
	if st := r.send(t, open); st.Code != 403 || !strings.Contains(st.Message, "replayed") {
		t.Fatalf("the replay: %d %q, want 403 replayed", st.Code, st.Message)
	}

	must(t, kubeconfig(t, "admin"), "", "get", "configmap", "hostile-target")
	audit, err := env.stack.Kube.Audit()
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	for _, ev := range audit {
		for _, rid := range refused {
			if ev.AuditID == rid {
				t.Errorf("the kube-apiserver saw refused request %s: %+v", rid, ev)
			}
		}
		if ev.AuditID == replayed {
			runs++
		}
	}
	if runs != 1 {
		t.Errorf("the genuine request reached the kube-apiserver %d times, want once", runs)
	}
}

// rogueRouter speaks the router's side of the NATS hop (lib/natslink)
// with a router's own NATS user and password.
type rogueRouter struct {
	nc    *nats.Conn
	inbox string
	n     int
}

func newRogueRouter(t *testing.T) *rogueRouter {
	t.Helper()
	const user = "router-0"
	pw, err := os.ReadFile(filepath.Join(env.dir, "state", "nats-users", user))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env.stack.NATSURL, nats.Name(intruder), nats.UserInfo(user, string(pw)), nats.RootCAs(env.stack.CAFile),
		nats.CustomInboxPrefix(subject.Inbox(user)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	inbox, err := subject.RouterInbox(user, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	return &rogueRouter{nc: nc, inbox: inbox}
}

// send publishes open and returns the Status the agent answered.
func (r *rogueRouter) send(t *testing.T, open *tetherv1.Open) kstatus.Status {
	t.Helper()
	r.n++
	inbox := subject.Router(r.inbox, uint64(r.n))
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	to, err := subject.Requests(open.ClusterId)
	if err != nil {
		t.Fatal(err)
	}
	var seq natslink.Seq
	if err := seq.Publish(r.nc, to, inbox, &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		f, err := tunnel.Decode(m.Data)
		if err != nil {
			t.Fatalf("undecodable answer: %v", err)
		}
		if st, ok := answered(t, f); ok {
			return st
		}
	}
	t.Fatalf("no answer to %s", open.RequestId)
	return kstatus.Status{}
}

// answered is the Status of a response frame; false for any other frame.
func answered(t *testing.T, f *tetherv1.Frame) (kstatus.Status, bool) {
	t.Helper()
	switch k := f.Kind.(type) {
	case *tetherv1.Frame_Response:
		var st kstatus.Status
		if k.Response.Status >= 400 {
			if err := json.Unmarshal(k.Response.Body, &st); err != nil {
				t.Fatalf("answer %d with a body that is no Status: %q", k.Response.Status, k.Response.Body)
			}
		}
		st.Code = int(k.Response.Status)
		return st, true
	case *tetherv1.Frame_Reset_:
		t.Fatalf("reset: %v", k.Reset_)
	}
	return kstatus.Status{}, false
}
