module github.com/tether-dev/tether/services/subscriber

go 1.26.0
