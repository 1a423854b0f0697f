package router

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/tether-dev/tether/lib/subject"
)

// Cluster is a cluster the router serves.
type Cluster struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
}

// Catalog knows which clusters exist and who owns them. Until clusters
// become events (the tenants issue), it is a static file.
type Catalog struct {
	clusters map[string]Cluster
}

// NewCatalog validates clusters.
func NewCatalog(clusters []Cluster) (*Catalog, error) {
	c := &Catalog{clusters: make(map[string]Cluster, len(clusters))}
	for _, cl := range clusters {
		if !subject.ValidClusterID(cl.ID) {
			return nil, fmt.Errorf("catalog: invalid cluster id %q (a DNS label)", cl.ID)
		}
		if cl.Tenant == "" {
			return nil, fmt.Errorf("catalog: cluster %q has no tenant", cl.ID)
		}
		if _, dup := c.clusters[cl.ID]; dup {
			return nil, fmt.Errorf("catalog: cluster %q listed twice", cl.ID)
		}
		c.clusters[cl.ID] = cl
	}
	return c, nil
}

// LoadCatalog reads a JSON file: {"clusters": [{"id": "dev", "tenant": "acme"}]}.
func LoadCatalog(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	var f struct {
		Clusters []Cluster `json:"clusters"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("catalog: parsing %s: %w", path, err)
	}
	return NewCatalog(f.Clusters)
}

// Authorize returns the cluster if it exists and belongs to one of tenants.
// A cluster of another tenant is reported exactly like one that does not
// exist, so ids cannot be probed.
func (c *Catalog) Authorize(id string, tenants []string) (Cluster, bool) {
	cl, ok := c.clusters[id]
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
