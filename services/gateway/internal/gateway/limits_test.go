package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tether-dev/tether/lib/tunnel"
)

func TestLongRunning(t *testing.T) {
	tests := []struct {
		target  string
		upgrade string
		want    bool
	}{
		{"/clusters/c/api/v1/pods", "", false},
		{"/clusters/c/api/v1/pods?watch=true", "", true},
		{"/clusters/c/api/v1/pods?watch=1", "", true},
		{"/clusters/c/api/v1/pods?watch=false", "", false},
		{"/clusters/c/api/v1/watch/pods", "", true},
		{"/clusters/c/api/v1/namespaces/d/pods/p/log?follow=true", "", true},
		{"/clusters/c/api/v1/namespaces/d/pods/p/exec?command=sh", "SPDY/3.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if tt.upgrade != "" {
				tunnel.SetUpgrade(r.Header, tt.upgrade)
			}
			_, rest, err := ParsePath(r.URL.EscapedPath())
			if err != nil {
				t.Fatal(err)
			}
			if got := longRunning(r.URL.Query(), rest, tunnel.Upgrade(r.Header) != ""); got != tt.want {
				t.Errorf("longRunning = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAdmissionPerUserAndCluster(t *testing.T) {
	a := admission{user: newCounter(2), cluster: newCounter(3)}
	var releases []func()
	take := func(user, cluster string) bool {
		t.Helper()
		release, refusal := a.admit(user, cluster)
		if refusal != "" {
			return false
		}
		releases = append(releases, release)
		return true
	}
	if !take("ann", "c1") || !take("ann", "c1") {
		t.Fatal("two requests within the user limit refused")
	}
	if take("ann", "c2") {
		t.Fatal("a third request of one user admitted")
	}
	if !take("bob", "c1") {
		t.Fatal("another user refused while the cluster has room")
	}
	if take("cy", "c1") {
		t.Fatal("a fourth request to one cluster admitted")
	}
	// A refusal by the cluster must not keep the user's place.
	if !take("cy", "c2") || !take("cy", "c2") {
		t.Fatal("a user refused by one cluster lost places")
	}
	for _, r := range releases {
		r()
	}
	if len(a.user.n) != 0 || len(a.cluster.n) != 0 {
		t.Errorf("counters remember keys with nothing in flight: %v %v", a.user.n, a.cluster.n)
	}
	if release, refusal := (admission{user: newCounter(0), cluster: newCounter(0)}).admit("x", "y"); refusal != "" {
		t.Error("zero limits refused")
	} else {
		release()
	}
}

func TestHeadBytes(t *testing.T) {
	r := httptest.NewRequest("GET", "/clusters/c/api", nil)
	small := headBytes(r)
	r.Header.Set("X-Big", strings.Repeat("x", 10000))
	if got := headBytes(r); got < small+10000 {
		t.Errorf("headBytes = %d, want at least %d", got, small+10000)
	}
}
