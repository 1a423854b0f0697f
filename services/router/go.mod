module github.com/tether-dev/tether/services/router

go 1.26.0
