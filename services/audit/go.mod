module github.com/tether-dev/tether/services/audit

go 1.26.0
