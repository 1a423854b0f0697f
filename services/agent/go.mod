module github.com/tether-dev/tether/services/agent

go 1.26.0
