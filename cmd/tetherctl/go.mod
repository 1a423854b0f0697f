module github.com/tether-dev/tether/cmd/tetherctl

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/tether-dev/tether/lib v0.0.0
	golang.org/x/oauth2 v0.37.0
	sigs.k8s.io/yaml v1.6.0
)

require (
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/tether-dev/tether/lib => ../../lib
