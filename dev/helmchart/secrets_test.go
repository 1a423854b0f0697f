package helmchart

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tether-dev/tether/dev/chartsecrets"
)

// `tether-dev secrets` (dev/chartsecrets) makes exactly the Secrets, and
// the keys, that the chart's pods mount with certificates from Secrets,
// for a release named tether and for one that is not; the static tokens are
// the operator's own.
func TestSecretsMatchTheChart(t *testing.T) {
	f := newFixture(t)
	for _, rel := range []string{"tether", "prod"} {
		t.Run(rel, func(t *testing.T) {
			out, err := f.helm.Run(t.Context(), "template", rel, f.chart, "--namespace", namespace)
			if err != nil {
				t.Fatal(err)
			}
			_, pods := objectsAndPods(t, out)
			used := secretRefs(t, pods)
			delete(used, chartsecrets.Fullname(rel)+"-tokens")

			b, err := chartsecrets.List(chartsecrets.Options{Namespace: namespace, Release: rel,
				GatewayHost: "tether.example.com", AgentsHost: "agents.example.com"})
			if err != nil {
				t.Fatal(err)
			}
			var list struct {
				Items []struct {
					Metadata   struct{ Name, Namespace string }
					StringData map[string]string
				}
			}
			if err := json.Unmarshal(b, &list); err != nil {
				t.Fatal(err)
			}
			made := map[string]bool{}
			for _, s := range list.Items {
				made[s.Metadata.Name] = true
				keys, ok := used[s.Metadata.Name]
				if !ok {
					t.Errorf("Secret %s is made but no pod mounts it", s.Metadata.Name)
				}
				for _, k := range keys {
					if s.StringData[k] == "" {
						t.Errorf("Secret %s lacks key %s, which a pod reads", s.Metadata.Name, k)
					}
				}
			}
			for name := range used {
				if !made[name] {
					t.Errorf("pods mount Secret %s, which tether-dev secrets does not make", name)
				}
			}
		})
	}
}

// secretRefs maps each Secret the pods read to the keys they read from it
// (a whole-Secret mount reads tls.crt and tls.key, and ca.crt for internal ones).
func secretRefs(t *testing.T, pods []map[string]any) map[string][]string {
	t.Helper()
	b, err := json.Marshal(pods)
	if err != nil {
		t.Fatal(err)
	}
	var ps []struct {
		Spec struct {
			Volumes []struct {
				Secret *struct {
					SecretName string
					Items      []struct{ Key string }
				}
			}
			Containers []struct {
				Env []struct {
					ValueFrom *struct {
						SecretKeyRef *struct{ Name, Key string }
					}
				}
				VolumeMounts []struct{ Name, MountPath string }
			}
		}
	}
	if err := json.Unmarshal(b, &ps); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	add := func(name string, keys ...string) {
		for _, k := range keys {
			if !slices.Contains(out[name], k) {
				out[name] = append(out[name], k)
			}
		}
		sort.Strings(out[name])
	}
	for _, p := range ps {
		for _, v := range p.Spec.Volumes {
			switch {
			case v.Secret == nil:
			case len(v.Secret.Items) > 0:
				for _, it := range v.Secret.Items {
					add(v.Secret.SecretName, it.Key)
				}
			case strings.Contains(v.Secret.SecretName, "-internal-"):
				add(v.Secret.SecretName, "tls.crt", "tls.key", "ca.crt")
			default:
				add(v.Secret.SecretName, "tls.crt", "tls.key")
			}
		}
		for _, c := range p.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					add(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
	return out
}
