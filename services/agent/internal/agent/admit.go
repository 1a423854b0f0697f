package agent

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
)

// Admission decides, before anything reaches the kube-apiserver, whom a
// request may run as: the identity a gateway signed for this very request
// to this cluster (ADR 011), never what the hops behind the gateway say,
// and never a Kubernetes system identity unless this cluster allows it by
// name.
type Admission struct {
	// Verifier trusts the gateway keys that the identity root certified.
	Verifier *assertion.Verifier
	// Tenant is the tenant this cluster was installed for: its users
	// only, whatever a router decided.
	Tenant string
	// AllowSystem are the system: users and groups (a platform operator's
	// break-glass group) this agent impersonates; every other system:
	// name is refused, system:masters first of all.
	AllowSystem []string
	// MaxEntries bounds the request ids remembered against replays
	// (default 100,000): past it, new requests are refused until old
	// ones expire, rather than forgetting one that could be replayed.
	MaxEntries int
}

// maxAttempts is how many tries of one request an agent takes: the router
// gives up well before (it retries a few times, and resumes a watch for
// each lost hop), and a replay past it is refused.
const maxAttempts = 64

// errReplayed: the same try of a request came twice.
var errReplayed = errors.New("replayed")

// admission is Admission at work.
type admission struct {
	cfg     Admission
	cluster string

	mu        sync.Mutex
	seen      map[string]*seenRequest
	nextSweep time.Time
}

// seenRequest is what the agent remembers of a request id until its
// signature expires: which of its tries came.
type seenRequest struct {
	expires  time.Time
	attempts [maxAttempts / 64]uint64
}

func newAdmission(cfg Admission, cluster string) (*admission, error) {
	if cfg.Verifier == nil || cfg.Tenant == "" {
		return nil, errors.New("agent: an identity verifier (the identity root's public key) and the cluster's tenant are required")
	}
	for _, n := range cfg.AllowSystem {
		if !strings.HasPrefix(n, "system:") {
			return nil, fmt.Errorf("agent: %q is not a system: name; only those need allowing", n)
		}
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	return &admission{cfg: cfg, cluster: cluster, seen: map[string]*seenRequest{}}, nil
}

// refusal is why a request was refused before the kube-apiserver saw it:
// reason for the metric, status for the user.
type refusal struct {
	reason string
	status kstatus.Status
}

// admit returns the verified assertion open came with: who asks, and
// whom they asked to act as, if anyone. Or the refusal that says why not,
// in words the user can read.
func (ad *admission) admit(open *tetherv1.Open, now time.Time) (*tetherv1.IdentityAssertion, *refusal) {
	refuse := func(reason string, code int, msg string) *refusal {
		return &refusal{reason: reason, status: kstatus.New(code, fmt.Sprintf("the Tether agent of cluster %q refused this request: %s", ad.cluster, msg))}
	}
	a, err := ad.cfg.Verifier.Verify(open.SignedIdentity, now)
	if err == nil {
		err = assertion.Bind(a, open, ad.cluster)
	}
	if err != nil {
		return nil, refuse("identity", http.StatusForbidden, err.Error())
	}
	if !slices.Contains(a.GetTenants(), ad.cfg.Tenant) {
		return nil, refuse("tenant", http.StatusForbidden, fmt.Sprintf("the user is not of tenant %q", ad.cfg.Tenant))
	}
	if err := ad.record(tryKey(open.RequestId, a.GetHandoff()), open.Attempt, time.UnixMilli(a.GetExpiresUnixMilli()), now); err != nil {
		if errors.Is(err, errReplayed) {
			return nil, refuse("replayed", http.StatusForbidden, err.Error())
		}
		return nil, refuse("capacity", http.StatusServiceUnavailable, err.Error())
	}
	for _, id := range []*tetherv1.Identity{a.GetIdentity(), a.GetImpersonate()} {
		if name := ad.forbiddenSystemName(id); name != "" {
			return nil, refuse("system_name", http.StatusForbidden,
				fmt.Sprintf("it does not impersonate %q: Kubernetes system users and groups pass only when the cluster allows them by name", name))
		}
	}
	return a, nil
}

// everyone is the one system: group that grants nothing: the
// kube-apiserver adds it to every impersonated user anyway.
const everyone = "system:authenticated"

// forbiddenSystemName is the first system: user or group in id that is
// not allowed, or "".
func (ad *admission) forbiddenSystemName(id *tetherv1.Identity) string {
	for _, n := range systemNames(id) {
		if !slices.Contains(ad.cfg.AllowSystem, n) {
			return n
		}
	}
	return ""
}

// systemNames are the system: user and groups id carries, but everyone:
// what must be allowed by name, and is counted as break-glass use.
func systemNames(id *tetherv1.Identity) []string {
	var out []string
	for _, n := range append([]string{id.GetUser()}, id.GetGroups()...) {
		if strings.HasPrefix(n, "system:") && n != everyone {
			out = append(out, n)
		}
	}
	return out
}

// tryKey names the tries of one hand-off of a request: each router the
// gateway hands a read to counts its attempts from 0, under a signature of
// its own.
func tryKey(id string, handoff uint32) string {
	if handoff == 0 {
		return id
	}
	return id + "/" + strconv.FormatUint(uint64(handoff), 10)
}

// record takes try attempt of request id once, until its signature
// expires: a try that came before is a replay.
func (ad *admission) record(id string, attempt uint32, expires, now time.Time) error {
	if attempt >= maxAttempts {
		return fmt.Errorf("%w: try %d of one request is past the %d any router makes", errReplayed, attempt, maxAttempts)
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if now.After(ad.nextSweep) {
		for k, r := range ad.seen {
			if !r.expires.After(now) {
				delete(ad.seen, k)
			}
		}
		ad.nextSweep = now.Add(10 * time.Second)
	}
	r := ad.seen[id]
	if r == nil {
		if len(ad.seen) >= ad.cfg.MaxEntries {
			return fmt.Errorf("too many requests under way to check them for replays (%d); retry", ad.cfg.MaxEntries)
		}
		r = &seenRequest{expires: expires}
		ad.seen[id] = r
	}
	word, bit := attempt/64, uint64(1)<<(attempt%64)
	if r.attempts[word]&bit != 0 {
		return fmt.Errorf("%w: try %d of this request came before", errReplayed, attempt)
	}
	r.attempts[word] |= bit
	return nil
}

func (ad *admission) len() int {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	return len(ad.seen)
}
