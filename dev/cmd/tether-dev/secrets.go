package main

import (
	"flag"
	"fmt"

	"github.com/tether-dev/tether/dev/chartsecrets"
)

// secrets prints, as a Kubernetes List, the Secrets the Helm chart
// (deploy/helm/tether) mounts for a release (dev/chartsecrets). With
// --gateway-host and --agents-host, also the two public certificates, from
// a throwaway CA, for a trial.
//
//	go run ./dev/cmd/tether-dev secrets --namespace tether --release tether | kubectl apply -f -
func secrets(args []string) error {
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	var o chartsecrets.Options
	fs.StringVar(&o.Namespace, "namespace", "tether", "namespace of the release")
	fs.StringVar(&o.Release, "release", "tether", "the Helm release's name")
	fs.StringVar(&o.RootKeyOut, "identity-root-key-out", "", "write the identity root's private key here (0600), to certify the gateways' next key; kept out of the Secrets")
	fs.StringVar(&o.GatewayHost, "gateway-host", "", "also a certificate for the gateway's host name (expose.gateway.host), from a throwaway CA")
	fs.StringVar(&o.AgentsHost, "agents-host", "", "also a certificate for the agents' host name (expose.agents.host), from the same throwaway CA")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := chartsecrets.List(o)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}
