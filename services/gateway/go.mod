module github.com/tether-dev/tether/services/gateway

go 1.26.0
