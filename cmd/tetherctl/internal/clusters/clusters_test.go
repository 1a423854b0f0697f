package clusters

import (
	"os"
	"path/filepath"
	"testing"
)

// deploy/agent.yaml is the manifest tetherctl prints, with placeholders:
// the two cannot drift apart.
func TestDeployAgentYAMLIsTheManifest(t *testing.T) {
	got, err := Manifest(ManifestValues{ClusterID: "CLUSTER_ID", AgentEndpoint: "https://SUBSCRIBER_HOST",
		BootstrapToken: "BOOTSTRAP_TOKEN", Image: "tether/agent:dev", Expires: "EXPIRES"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "..", "..", "deploy", "agent.yaml")
	if os.Getenv("UPDATE_DEPLOY") != "" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("deploy/agent.yaml differs from the manifest tetherctl prints; regenerate with UPDATE_DEPLOY=1 go test ./cmd/tetherctl/...")
	}
}
