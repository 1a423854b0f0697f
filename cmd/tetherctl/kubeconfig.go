package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// kubeUser is what tetherctl takes from a kubeconfig's current context.
type kubeUser struct {
	server string
	caPEM  []byte
	token  string
	exec   *execConfig
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
	if err := yaml.Unmarshal(b, &kc); err != nil {
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
		for _, u := range kc.Users {
			if u.Name == cx.Context.User {
				out.token, out.exec = u.User.Token, u.User.Exec
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
