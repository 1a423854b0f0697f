module github.com/tether-dev/tether/dev

go 1.26.0
