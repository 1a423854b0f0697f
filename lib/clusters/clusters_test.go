package clusters

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

func created(id, tenant, uid string) *tetherv1.ClusterEvent {
	return &tetherv1.ClusterEvent{ClusterId: id, Actor: "admin", Kind: &tetherv1.ClusterEvent_Created{Created: &tetherv1.ClusterCreated{Tenant: tenant, Uid: uid}}}
}

func deleted(id string) *tetherv1.ClusterEvent {
	return &tetherv1.ClusterEvent{ClusterId: id, Kind: &tetherv1.ClusterEvent_Deleted{Deleted: &tetherv1.ClusterDeleted{}}}
}

func bootstrap(id, token string, expires time.Time) *tetherv1.ClusterEvent {
	sum := sha256.Sum256([]byte(token))
	return &tetherv1.ClusterEvent{ClusterId: id, Kind: &tetherv1.ClusterEvent_BootstrapTokenIssued{
		BootstrapTokenIssued: &tetherv1.BootstrapTokenIssued{TokenSha256: sum[:], ExpiresUnix: expires.Unix()}}}
}

func enrolled(id, token string) *tetherv1.ClusterEvent {
	sum := sha256.Sum256([]byte(token))
	return &tetherv1.ClusterEvent{ClusterId: id, Kind: &tetherv1.ClusterEvent_AgentEnrolled{AgentEnrolled: &tetherv1.AgentEnrolled{TokenSha256: sum[:]}}}
}

func TestPage(t *testing.T) {
	p := NewProjection()
	seq := uint64(0)
	apply := func(ev *tetherv1.ClusterEvent) {
		seq++
		if err := p.Apply(seq, ev); err != nil {
			t.Fatal(err)
		}
	}
	// c01..c09: odd ones acme's, even ones globex's, made out of order.
	for _, n := range []string{"c05", "c02", "c09", "c01", "c04", "c07", "c03", "c08", "c06"} {
		tenant := "acme"
		if (n[2]-'0')%2 == 0 {
			tenant = "globex"
		}
		apply(created(n, tenant, "u"+n))
	}
	ids := func(cs []Cluster) (out []string) {
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	tests := []struct {
		name    string
		tenants []string
		after   string
		limit   int
		want    []string
		more    bool
	}{
		{"first page of all", nil, "", 3, []string{"c01", "c02", "c03"}, true},
		{"a middle page", nil, "c03", 3, []string{"c04", "c05", "c06"}, true},
		{"after an id that is not there", nil, "c035", 2, []string{"c04", "c05"}, true},
		{"the last page, exactly full", nil, "c06", 3, []string{"c07", "c08", "c09"}, false},
		{"past the end", nil, "c09", 3, nil, false},
		{"one tenant", []string{"acme"}, "c01", 2, []string{"c03", "c05"}, true},
		{"two tenants merge by id", []string{"globex", "acme", "globex"}, "c06", 10, []string{"c07", "c08", "c09"}, false},
		{"a tenant with none", []string{"initech"}, "", 10, nil, false},
		{"a limit below one is one", nil, "", 0, []string{"c01"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more := p.Page(tt.tenants, tt.after, tt.limit)
			if g := ids(got); !slices.Equal(g, tt.want) || more != tt.more {
				t.Fatalf("Page(%v, %q, %d) = %v, %v; want %v, %v", tt.tenants, tt.after, tt.limit, g, more, tt.want, tt.more)
			}
		})
	}
	// Clusters that come and go are in the next page asked for.
	apply(deleted("c02"))
	apply(created("c00", "globex", "u"))
	if got, _ := p.Page([]string{"globex"}, "", 2); !slices.Equal(ids(got), []string{"c00", "c04"}) {
		t.Fatalf("after a delete and a create: %v", ids(got))
	}
}

func TestProjection(t *testing.T) {
	soon := time.Now().Add(time.Hour)
	events := []struct {
		ev      *tetherv1.ClusterEvent
		skipped bool
	}{
		{created("a", "acme", "u1"), false},
		{created("b", "globex", "u2"), false},
		{created("a", "globex", "u3"), true}, // a exists
		{bootstrap("a", "tok1", soon), false},
		{enrolled("a", "wrong"), true},
		{enrolled("a", "tok1"), false},
		{enrolled("a", "tok1"), true}, // used up
		{bootstrap("zz", "t", soon), true},
		{created("bad.id", "acme", "u"), true},
		{created("c", "", "u"), true},
		{deleted("b"), false},
		{deleted("b"), true},
		{created("b", "acme", "u4"), false}, // a new cluster b
		{&tetherv1.ClusterEvent{ClusterId: "a"}, true},
	}
	p := NewProjection()
	var changes []Change
	p.OnChange(func(c Change) { changes = append(changes, c) })
	for i, e := range events {
		err := p.Apply(uint64(i+1), e.ev)
		if (err != nil) != e.skipped {
			t.Fatalf("event %d (%v): err %v, want skipped=%v", i+1, e.ev, err, e.skipped)
		}
	}
	a, ok := p.Get("a")
	if !ok || a.Tenant != "acme" || a.UID != "u1" || a.Enrollments != 1 || a.Bootstrap != nil || a.Seq != 6 {
		t.Fatalf("a = %+v, %v", a, ok)
	}
	b, ok := p.Get("b")
	if !ok || b.Tenant != "acme" || b.UID != "u4" || b.Seq != 13 || p.LastSeq("b") != 13 {
		t.Fatalf("b = %+v, %v", b, ok)
	}
	if _, ok := p.Authorize("b", []string{"globex"}); ok {
		t.Fatal("globex reaches acme's b")
	}
	if _, ok := p.Authorize("a", []string{"globex", "acme"}); !ok {
		t.Fatal("acme does not reach a")
	}
	if got, more := p.Page([]string{"acme"}, "", 10); len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || more {
		t.Fatalf("Page(acme) = %+v, %v", got, more)
	}
	if got, more := p.Page([]string{"globex"}, "", 10); len(got) != 0 || more {
		t.Fatalf("Page(globex) = %+v, %v", got, more)
	}
	if len(changes) != 6 || !changes[4].Deleted || changes[4].Cluster.ID != "b" || changes[4].Cluster.UID != "u2" {
		t.Fatalf("changes = %+v", changes)
	}
	if err := p.Apply(3, created("x", "acme", "u")); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("an old sequence: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.WaitApplied(ctx, 14); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitApplied(ctx, 15); err == nil {
		t.Fatal("waited for an event never applied")
	}
}

func TestBootstrapMatches(t *testing.T) {
	now := time.Now()
	b := &Bootstrap{SHA256: sha256.Sum256([]byte("tok")), Expires: now.Add(time.Minute)}
	tests := []struct {
		name  string
		b     *Bootstrap
		token string
		at    time.Time
		want  bool
	}{
		{"valid", b, "tok", now, true},
		{"wrong token", b, "tok2", now, false},
		{"expired", b, "tok", now.Add(time.Minute), false},
		{"none", nil, "tok", now, false},
	}
	for _, tt := range tests {
		if got := tt.b.Matches(tt.token, tt.at); got != tt.want {
			t.Errorf("%s: Matches = %v", tt.name, got)
		}
	}
}
