// Package clusters is the set of clusters as the services see it: a
// projection of the cluster events on the JetStream stream CLUSTERS
// (created, deleted, bootstrap token issued, agent enrolled). agent-registry
// writes the events; it, the routers and the subscribers each rebuild the
// projection from the stream at start and follow it.
package clusters

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// Stream holds every cluster event; subject tether.clusters.<id> holds one
// cluster's, so writers can check they saw the latest before adding one.
const (
	Stream        = "CLUSTERS"
	subjectPrefix = "tether.clusters."
	// Subjects is the stream's filter, for permissions and consumers.
	Subjects = subjectPrefix + ">"
)

// Subject is where cluster id's events go.
func Subject(id string) (string, error) {
	if !subject.ValidClusterID(id) {
		return "", fmt.Errorf("invalid cluster id %q", id)
	}
	return subjectPrefix + id, nil
}

// StreamConfig is the stream agent-registry creates. Events are kept for
// ever: they are the only record of which clusters exist.
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        Stream,
		Description: "Tether cluster lifecycle events",
		Subjects:    []string{Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		// A bound no real catalog reaches, so a runaway writer cannot fill
		// the disk.
		MaxMsgsPerSubject: 100_000,
		MaxMsgSize:        64 << 10,
		Discard:           jetstream.DiscardNew,
		DenyDelete:        true,
		DenyPurge:         true,
	}
}

// Cluster is one existing cluster.
type Cluster struct {
	ID, Tenant, UID string
	Created         time.Time
	CreatedBy       string
	Enrollments     uint32
	LastEnrolled    time.Time
	// Bootstrap is the current one-time token, if any is unused.
	Bootstrap *Bootstrap
	// Enrolled is the latest enrollment, while its token would still have
	// been valid: the same agent asking again is answered again.
	Enrolled *Enrolled
	// Seq is the stream sequence of the cluster's latest event: a writer
	// expects it, so two writers cannot both act on the same state.
	Seq uint64
}

// Bootstrap is a one-time enrollment token, known by its hash.
type Bootstrap struct {
	SHA256  [32]byte
	Expires time.Time
}

// Matches reports whether token is this bootstrap token and still valid.
func (b *Bootstrap) Matches(token string, now time.Time) bool {
	if b == nil || !now.Before(b.Expires) {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], b.SHA256[:]) == 1
}

// Enrolled is an enrollment that used up a bootstrap token.
type Enrolled struct {
	Token        Bootstrap
	IDSHA256     [32]byte
	CredentialID string
}

// Matches reports whether token and the agent's enrollment id are those
// of this enrollment, while the token would still have been valid. An
// enrollment made without an id matches nothing.
func (e *Enrolled) Matches(token, enrollmentID string, now time.Time) bool {
	if e == nil || enrollmentID == "" || e.IDSHA256 == ([32]byte{}) || !e.Token.Matches(token, now) {
		return false
	}
	sum := sha256.Sum256([]byte(enrollmentID))
	return subtle.ConstantTimeCompare(sum[:], e.IDSHA256[:]) == 1
}

// Change is what an applied event did, for followers that act on it (a
// subscriber closes the streams of a deleted cluster).
type Change struct {
	Cluster Cluster
	Deleted bool
}

// Projection is the current state of every cluster. It is safe for
// concurrent use.
type Projection struct {
	mu       sync.RWMutex
	clusters map[string]*Cluster
	// lastSeq of every cluster id ever seen, deleted ones included: the
	// sequence a writer expects when it creates the id again.
	lastSeq map[string]uint64
	applied uint64
	// advanced is closed and replaced whenever applied grows.
	advanced chan struct{}
	watch    []func(Change)
	// order is the ids sorted, for pages; nil after a cluster was created
	// or deleted, and sorted again by the next page asked for, so a fleet
	// that does not change costs no sorting.
	order *order
}

// order is the clusters' ids sorted, all of them and by tenant.
type order struct {
	all      []string
	byTenant map[string][]string
}

// NewProjection returns an empty projection.
func NewProjection() *Projection {
	return &Projection{clusters: map[string]*Cluster{}, lastSeq: map[string]uint64{}, advanced: make(chan struct{})}
}

// OnChange registers f to be called after each applied event that changed
// a cluster, in order, outside the projection's lock. Register before
// following.
func (p *Projection) OnChange(f func(Change)) {
	p.mu.Lock()
	p.watch = append(p.watch, f)
	p.mu.Unlock()
}

// ErrOutOfOrder: an event at or below the last applied sequence.
var ErrOutOfOrder = errors.New("clusters: event out of order")

// Apply applies the event stored at stream sequence seq. An event that does
// not fit the cluster's state (enrolling a cluster that does not exist) is
// skipped: writers check before writing, so it can only come from a writer
// that lost a race it should have lost, and the projection stays as if it
// was never written.
func (p *Projection) Apply(seq uint64, ev *tetherv1.ClusterEvent) (skipped error) {
	p.mu.Lock()
	if seq <= p.applied {
		p.mu.Unlock()
		return fmt.Errorf("%w: %d after %d", ErrOutOfOrder, seq, p.applied)
	}
	p.applied = seq
	id := ev.GetClusterId()
	at := time.Unix(0, ev.GetTimeUnixNano())
	cl := p.clusters[id]
	var change *Change
	switch k := ev.GetKind().(type) {
	case *tetherv1.ClusterEvent_Created:
		switch {
		case cl != nil:
			skipped = fmt.Errorf("cluster %q created twice", id)
		case !subject.ValidClusterID(id) || k.Created.GetTenant() == "" || k.Created.GetUid() == "":
			skipped = fmt.Errorf("cluster %q created without a valid id, tenant and uid", id)
		default:
			cl = &Cluster{ID: id, Tenant: k.Created.GetTenant(), UID: k.Created.GetUid(), Created: at, CreatedBy: ev.GetActor()}
			p.clusters[id] = cl
			p.order = nil
			change = &Change{}
		}
	case *tetherv1.ClusterEvent_Deleted:
		if cl == nil {
			skipped = fmt.Errorf("deleting cluster %q that does not exist", id)
			break
		}
		delete(p.clusters, id)
		p.order = nil
		change = &Change{Deleted: true}
	case *tetherv1.ClusterEvent_BootstrapTokenIssued:
		var sum [32]byte
		if cl == nil || copy(sum[:], k.BootstrapTokenIssued.GetTokenSha256()) != len(sum) {
			skipped = fmt.Errorf("bootstrap token for cluster %q: no such cluster or a bad hash", id)
			break
		}
		cl.Bootstrap = &Bootstrap{SHA256: sum, Expires: time.Unix(k.BootstrapTokenIssued.GetExpiresUnix(), 0)}
		change = &Change{}
	case *tetherv1.ClusterEvent_AgentEnrolled:
		if cl == nil || cl.Bootstrap == nil || subtle.ConstantTimeCompare(cl.Bootstrap.SHA256[:], k.AgentEnrolled.GetTokenSha256()) != 1 {
			skipped = fmt.Errorf("enrollment of cluster %q with a token that is not its current one", id)
			break
		}
		cl.Enrolled = &Enrolled{Token: *cl.Bootstrap, CredentialID: k.AgentEnrolled.GetCredentialId()}
		copy(cl.Enrolled.IDSHA256[:], k.AgentEnrolled.GetEnrollmentIdSha256())
		cl.Bootstrap = nil // used up
		cl.Enrollments++
		cl.LastEnrolled = at
		change = &Change{}
	default:
		skipped = fmt.Errorf("unknown event for cluster %q", id)
	}
	if change != nil {
		p.lastSeq[id] = seq
		cl.Seq = seq
		change.Cluster = *cl
	}
	watch := p.watch
	close(p.advanced)
	p.advanced = make(chan struct{})
	p.mu.Unlock()
	if change != nil {
		for _, f := range watch {
			f(*change)
		}
	}
	return skipped
}

// Applied is the stream sequence of the last event applied.
func (p *Projection) Applied() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.applied
}

// WaitApplied waits until the event at seq, and all before it, are applied.
func (p *Projection) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		p.mu.RLock()
		applied, advanced := p.applied, p.advanced
		p.mu.RUnlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return fmt.Errorf("clusters: waiting for event %d (applied %d): %w", seq, applied, ctx.Err())
		}
	}
}

// Get returns a cluster that exists.
func (p *Projection) Get(id string) (Cluster, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	cl, ok := p.clusters[id]
	if !ok {
		return Cluster{}, false
	}
	return *cl, true
}

// LastSeq is the sequence of the latest event of id, even if id was
// deleted since; 0 if id never existed.
func (p *Projection) LastSeq(id string) uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.lastSeq[id]
}

// Authorize returns the cluster if it exists and belongs to one of tenants.
// A cluster of another tenant is reported exactly like one that does not
// exist, so ids cannot be probed.
func (p *Projection) Authorize(id string, tenants []string) (Cluster, bool) {
	cl, ok := p.Get(id)
	if !ok {
		return Cluster{}, false
	}
	for _, t := range tenants {
		if t == cl.Tenant {
			return cl, true
		}
	}
	return Cluster{}, false
}

// Page returns at most limit clusters of tenants (all with none given)
// whose ids sort after after, by id, and whether more follow. Its cost is
// the page's, not the fleet's: ListClusters over 10,000 clusters.
func (p *Projection) Page(tenants []string, after string, limit int) ([]Cluster, bool) {
	if limit < 1 {
		limit = 1
	}
	o := p.sorted()
	var ids []string
	if len(tenants) == 0 {
		ids = from(o.all, after, limit+1)
	} else {
		// Each tenant's ids are disjoint from the others': the page is the
		// first of their pages merged.
		seen := map[string]bool{}
		for _, t := range tenants {
			if !seen[t] {
				seen[t] = true
				ids = append(ids, from(o.byTenant[t], after, limit+1)...)
			}
		}
		sort.Strings(ids)
		ids = ids[:min(len(ids), limit+1)]
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]Cluster, 0, len(ids))
	p.mu.RLock()
	for _, id := range ids {
		// Deleted since the order was read: the page is one shorter.
		if cl, ok := p.clusters[id]; ok {
			out = append(out, *cl)
		}
	}
	p.mu.RUnlock()
	return out, more
}

// from is at most n of sorted's ids after after.
func from(sorted []string, after string, n int) []string {
	i, found := sort.Find(len(sorted), func(i int) int { return strings.Compare(after, sorted[i]) })
	if found {
		i++
	}
	return sorted[i:min(len(sorted), i+n)]
}

// sorted is the projection's order, sorted again if clusters came or went.
func (p *Projection) sorted() *order {
	p.mu.RLock()
	o := p.order
	p.mu.RUnlock()
	if o != nil {
		return o
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.order == nil {
		o := &order{all: make([]string, 0, len(p.clusters)), byTenant: map[string][]string{}}
		for id, cl := range p.clusters {
			o.all = append(o.all, id)
			o.byTenant[cl.Tenant] = append(o.byTenant[cl.Tenant], id)
		}
		sort.Strings(o.all)
		for _, ids := range o.byTenant {
			sort.Strings(ids)
		}
		p.order = o
	}
	return p.order
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
