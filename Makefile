# Tether: `make run` brings the stack up; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
MODULES := lib dev cmd/tetherctl services/gateway services/router services/subscriber services/agent \
	services/agent-registry services/audit services/autoscaler services/nats-auth loadtest
PKGS := $(addprefix ./,$(addsuffix /...,$(MODULES)))
# The chaos test runs a fleet of its own (3 NATS nodes, 20 agents) and
# takes both cores: alone, after the rest. It needs root, iproute2 and
# iptables for its test host (a network namespace).
CHAOS := ./dev/chaos

# Pinned tool versions (see docs/development.md).
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_CONNECT := connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
BUF := github.com/bufbuild/buf/cmd/buf@v1.75.0

.PHONY: run test test-short chaos bench loadtest fuzz proto kube vet fmt clean images

## run: the whole stack on this machine; AGENT_KUBECONFIG=~/.kube/config to use your cluster, REPLICAS=2 for two of each gateway, router, subscriber, CLUSTER=3 for a three-node NATS cluster, CHECK=1 to check it through kubectl and stop
# Built and exec'd rather than `go run`, so Ctrl-C reaches tether-dev
# itself and its exit status is make's.
run:
	$(GO) build -o $(BIN)/tether-dev ./dev/cmd/tether-dev
	exec $(BIN)/tether-dev --state .state --replicas $(or $(REPLICAS),1) --nats-nodes $(or $(CLUSTER),1) $(if $(CHECK),--check)

## test: every test: unit, integration, end to end and chaos (builds kube-apiserver on first use)
test: vet
	bash hack/kube/build.sh >/dev/null
	bash hack/helm/build.sh >/dev/null
	$(GO) test -count=1 -timeout 25m $$($(GO) list $(PKGS) | grep -v '/dev/chaos$$')
	$(GO) test -count=1 -timeout 15m -v -run TestChaos $(CHAOS)

## test-short: the tests that need no control plane (the packages that need one skip under -short)
test-short:
	$(GO) test -short -count=1 $$($(GO) list $(PKGS) | grep -v '/dev/chaos$$')

## chaos: the chaos test alone, printing what it counted and writing it to bench/results/chaos.md
chaos:
	bash hack/kube/build.sh >/dev/null
	TETHER_CHAOS_REPORT=$(CURDIR)/bench/results/chaos.md $(GO) test -count=1 -timeout 15m -v -run TestChaos $(CHAOS)

## bench: latency, throughput and memory through Tether vs direct; writes bench/results/
bench:
	bash hack/kube/build.sh >/dev/null
	$(GO) run ./dev/cmd/bench --out bench/results

## loadtest: a fleet of simulated agents and one load scenario against the stack, or a deployed Tether (TARGET=...); SCENARIO=idle|steady|mixed|spike|watches|storm|soak AGENTS=1000 RATE=200 DURATION=60s WATCHES=1000; writes bench/results/capacity-SCENARIO.md
SCENARIO ?= steady
AGENTS ?= 1000
RATE ?= 200
DURATION ?= 60s
# watches, soak: watches held open, and the events a second they get in all
WATCHES ?= 1000
WATCH_EVENTS ?= 1000
# storm: how long the killed subscriber stays down; negative: for good
STORM_DOWN ?= 0s
# a deployed Tether instead: its gateways' URLs (comma-separated), their CA,
# the load users' tokens (one a line, or tokens.csv), an administrator's
# token (creates the clusters), the agents' endpoint and its CA, the
# identity root's public key, and NAME=URL of the /metrics to sample
TARGET ?=
TARGET_CA ?=
TARGET_TOKENS ?=
TARGET_ADMIN_TOKEN ?=
AGENTS_URL ?=
AGENTS_CA ?=
IDENTITY_ROOT ?=
METRICS ?=
TENANT ?= acme
loadtest:
	$(if $(TARGET),,bash hack/kube/build.sh >/dev/null)
	$(GO) run ./dev/cmd/loadtest --scenario $(SCENARIO) --agents $(AGENTS) --rate $(RATE) --duration $(DURATION) --storm-down $(STORM_DOWN) --watches $(WATCHES) --watch-events $(WATCH_EVENTS) --out bench/results \
	  $(if $(TARGET),--target '$(TARGET)' --target-ca '$(TARGET_CA)' --target-tokens '$(TARGET_TOKENS)' --target-admin-token '$(TARGET_ADMIN_TOKEN)' \
	    --agents-url '$(AGENTS_URL)' --agents-ca '$(AGENTS_CA)' --identity-root-key '$(IDENTITY_ROOT)' --metrics '$(METRICS)' --tenant '$(TENANT)')

## fuzz: each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./lib/tunnel -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./services/gateway/internal/gateway -run '^$$' -fuzz FuzzParsePath -fuzztime $(FUZZTIME)
	$(GO) test ./services/gateway/internal/gateway -run '^$$' -fuzz FuzzClusterHost -fuzztime $(FUZZTIME)
	$(GO) test ./services/gateway/internal/identity -run '^$$' -fuzz FuzzClaimsMap -fuzztime $(FUZZTIME)
	$(GO) test ./lib/agentcred -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME)
	$(GO) test ./services/router/internal/router -run '^$$' -fuzz FuzzFramer -fuzztime $(FUZZTIME)

## proto: regenerate lib/gen from proto/ with pinned local plugins
proto:
	@# One go install per module: go install takes one module version per call.
	for t in $(PROTOC_GEN_GO) $(PROTOC_GEN_CONNECT) $(BUF); do GOBIN=$(BIN) $(GO) install $$t || exit 1; done
	cd proto && $(BIN)/buf lint && $(BIN)/buf generate

## kube: build (or find cached) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
kube:
	bash hack/kube/build.sh

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $(MODULES))" || { gofmt -l $(MODULES); echo "gofmt needed"; exit 1; }

clean:
	rm -rf .state .bin

## images: FROM-scratch images of every binary (tether/<name>:dev), for docker compose and deploy/
IMAGES := gateway router subscriber agent agent-registry audit autoscaler nats-auth natsd tetherctl
# Each image carries the build machine's CA roots (Debian's ca-certificates),
# where Go looks for them: agents trust public subscriber certificates.
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
images:
	@test -s $(CA_BUNDLE) || { echo "no CA bundle at $(CA_BUNDLE) (apt-get install ca-certificates, or CA_BUNDLE=FILE)"; exit 1; }
	@mkdir -p .state/images
	@for n in $(IMAGES); do \
	  pkg=./services/$$n/cmd/$$n; [ $$n = natsd ] && pkg=./dev/cmd/natsd; [ $$n = tetherctl ] && pkg=./cmd/tetherctl; \
	  mkdir -p .state/images/$$n && CGO_ENABLED=0 $(GO) build -trimpath -o .state/images/$$n/$$n $$pkg || exit 1; \
	  cp $(CA_BUNDLE) .state/images/$$n/ca-certificates.crt || exit 1; \
	  printf 'FROM scratch\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\nCOPY %s /%s\nUSER 65532:65532\nENTRYPOINT ["/%s"]\n' $$n $$n $$n > .state/images/$$n/Dockerfile; \
	  docker build -q -t tether/$$n:dev .state/images/$$n || exit 1; \
	done
	@# docker-compose.yml's own: the control plane, the development node, tether-dev pki.
	GO=$(GO) bash hack/images/local.sh $(CURDIR)/.state
