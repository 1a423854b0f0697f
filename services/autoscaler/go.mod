module github.com/tether-dev/tether/services/autoscaler

go 1.26.0
