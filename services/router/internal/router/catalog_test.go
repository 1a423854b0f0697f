package router

import "testing"

func TestCatalog(t *testing.T) {
	if _, err := NewCatalog([]Cluster{{ID: "a.b", Tenant: "t"}}); err == nil {
		t.Fatal("accepted a cluster id with a NATS separator")
	}
	if _, err := NewCatalog([]Cluster{{ID: "a", Tenant: "t"}, {ID: "a", Tenant: "u"}}); err == nil {
		t.Fatal("accepted a duplicate cluster")
	}
	if _, err := NewCatalog([]Cluster{{ID: "a"}}); err == nil {
		t.Fatal("accepted a cluster without a tenant")
	}
	c, err := NewCatalog([]Cluster{{ID: "prod", Tenant: "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id      string
		tenants []string
		want    bool
	}{
		{"prod", []string{"acme"}, true},
		{"prod", []string{"globex", "acme"}, true},
		{"prod", []string{"globex"}, false},
		{"prod", nil, false},
		{"dev", []string{"acme"}, false},
	}
	for _, tt := range tests {
		if _, ok := c.Authorize(tt.id, tt.tenants); ok != tt.want {
			t.Errorf("Authorize(%q, %v) = %v, want %v", tt.id, tt.tenants, ok, tt.want)
		}
	}
}
