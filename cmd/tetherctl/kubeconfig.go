package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tether-dev/tether/lib/subject"
)

// kubeUser is what tetherctl takes from a kubeconfig's current context.
type kubeUser struct {
	server string
	caPEM  []byte
	token  string
	exec   *execConfig
	// rawUser is the user entry whole, for kubeconfigs tetherctl writes.
	rawUser map[string]any
}

type execConfig struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	APIVersion string `json:"apiVersion"`
}

func readKubeconfig(path string) (kubeUser, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return kubeUser{}, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	var kc struct {
		CurrentContext string `json:"current-context"`
		Contexts       []struct {
			Name    string `json:"name"`
			Context struct {
				Cluster string `json:"cluster"`
				User    string `json:"user"`
			} `json:"context"`
		} `json:"contexts"`
		Clusters []struct {
			Name    string `json:"name"`
			Cluster struct {
				Server                   string `json:"server"`
				CertificateAuthority     string `json:"certificate-authority"`
				CertificateAuthorityData string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			Name string `json:"name"`
			User struct {
				Token string      `json:"token"`
				Exec  *execConfig `json:"exec"`
			} `json:"user"`
		} `json:"users"`
	}
	var raw struct {
		Users []struct {
			User map[string]any `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return kubeUser{}, fmt.Errorf("parsing the kubeconfig %s: %w", path, err)
	}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return kubeUser{}, fmt.Errorf("parsing the kubeconfig %s: %w", path, err)
	}
	var out kubeUser
	for _, cx := range kc.Contexts {
		if cx.Name != kc.CurrentContext {
			continue
		}
		for _, cl := range kc.Clusters {
			if cl.Name == cx.Context.Cluster {
				out.server = cl.Cluster.Server
				switch {
				case cl.Cluster.CertificateAuthorityData != "":
					out.caPEM, err = base64.StdEncoding.DecodeString(cl.Cluster.CertificateAuthorityData)
				case cl.Cluster.CertificateAuthority != "":
					ca := cl.Cluster.CertificateAuthority
					if !filepath.IsAbs(ca) {
						ca = filepath.Join(filepath.Dir(path), ca)
					}
					out.caPEM, err = os.ReadFile(ca)
				}
				if err != nil {
					return kubeUser{}, fmt.Errorf("the kubeconfig's CA: %w", err)
				}
			}
		}
		for i, u := range kc.Users {
			if u.Name == cx.Context.User {
				out.token, out.exec, out.rawUser = u.User.Token, u.User.Exec, raw.Users[i].User
			}
		}
	}
	if out.server == "" {
		return kubeUser{}, fmt.Errorf("the kubeconfig %s has no current context with a server", path)
	}
	return out, nil
}

// bearer is the user's token: as written, or from its exec plugin (such
// as `tetherctl login`), run as client-go would.
func (k kubeUser) bearer(ctx context.Context) (string, error) {
	if k.token != "" {
		return k.token, nil
	}
	if k.exec == nil {
		return "", errors.New("the kubeconfig's user has neither a token nor an exec plugin; use --token")
	}
	cmd := exec.CommandContext(ctx, k.exec.Command, k.exec.Args...)
	cmd.Env = os.Environ()
	for _, e := range k.exec.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s: %w", k.exec.Command, err)
	}
	var cred struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out.Bytes(), &cred); err != nil || cred.Status.Token == "" {
		return "", fmt.Errorf("%s printed no ExecCredential token", k.exec.Command)
	}
	return cred.Status.Token, nil
}

// clusterServer is cluster's server URL on the gateway at base (https://GW
// or https://GW:PORT): https://GW/clusters/{id} ("path"), or
// https://{id}.DOMAIN:PORT ("host"), for clients that drop a server URL's
// path (kubectl proxy, some kubectl versions' OpenAPI v3 client).
func clusterServer(base, cluster, address, domain string) (string, error) {
	if !subject.ValidClusterID(cluster) {
		return "", fmt.Errorf("%q is not a cluster id", cluster)
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("the gateway URL %q is not https://HOST[:PORT]", base)
	}
	switch address {
	case "path":
		return "https://" + u.Host + "/clusters/" + cluster, nil
	case "host":
		if domain == "" || net.ParseIP(strings.Trim(domain, "[]")) != nil {
			return "", fmt.Errorf("host addressing needs the gateway's cluster domain (--cluster-domain); %q is not one", domain)
		}
		host := cluster + "." + strings.ToLower(strings.TrimSuffix(domain, "."))
		if p := u.Port(); p != "" {
			host = net.JoinHostPort(host, p)
		}
		return "https://" + host, nil
	}
	return "", fmt.Errorf("--address is host or path, not %q", address)
}

// clusterDomain is the domain a kubeconfig's server implies: the gateway's
// own name when it addresses clusters by path, the name minus the
// cluster's label when by host.
func clusterDomain(server string) string {
	u, err := url.Parse(server)
	if err != nil {
		return ""
	}
	if strings.HasPrefix(u.Path, "/clusters/") {
		return u.Hostname()
	}
	_, domain, _ := strings.Cut(u.Hostname(), ".")
	return domain
}

// writeClusterKubeconfig writes a kubeconfig for cluster at server: the
// CA and the user entry of the kubeconfig k came from, as they were.
func writeClusterKubeconfig(w io.Writer, k kubeUser, cluster, server string) error {
	entry := map[string]any{"server": server}
	if len(k.caPEM) > 0 {
		entry["certificate-authority-data"] = base64.StdEncoding.EncodeToString(k.caPEM)
	}
	user := k.rawUser
	if user == nil {
		user = map[string]any{}
	}
	name := "tether-" + cluster
	cfg := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"current-context": name,
		"clusters":        []any{map[string]any{"name": name, "cluster": entry}},
		"users":           []any{map[string]any{"name": name, "user": user}},
		"contexts":        []any{map[string]any{"name": name, "context": map[string]any{"cluster": name, "user": name}}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	_, err = w.Write(b)
	return err
}
