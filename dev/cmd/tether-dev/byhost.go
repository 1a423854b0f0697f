package main

import (
	"fmt"
	"strings"

	"github.com/tether-dev/tether/dev/stack"
)

// byHost is what make run says about addressing the cluster by host name
// (ADR 009): the kubeconfig, and how kubectl resolves the name here.
func byHost(s *stack.Stack) (string, error) {
	kc, err := s.HostKubeconfigFor("admin", s.Users["admin"].Token, stack.ClusterID)
	if err != nil {
		return "", err
	}
	hosts, err := s.HostsFile(stack.ClusterID)
	if err != nil {
		return "", err
	}
	bin, args, err := stack.HostsCommand(hosts, "kubectl", "--kubeconfig", kc, "proxy")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`
The cluster by host name, %s, for clients that drop a server URL's path
(kubectl proxy): KUBECONFIG=%s
curl and browsers resolve *.localhost themselves; kubectl asks DNS, so run it
where the name resolves, e.g. with a hosts file of its own:
  %s %s
`, s.ClusterHostURL(stack.ClusterID), kc, bin, strings.Join(quote(args), " ")), nil
}

func quote(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if strings.ContainsAny(a, ` "$&|;`) {
			out[i] = "'" + a + "'"
		}
	}
	return out
}
