module github.com/tether-dev/tether/services/agent-registry

go 1.26.0
