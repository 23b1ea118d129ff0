# keysmith — Kubernetes operator for machine API credentials.
# `make help` lists the targets.

KUBE_VERSION ?= 1.37.2
ETCD_VERSION ?= 3.7.3
CONTROLLER_GEN_VERSION ?= v0.23.0
# staticcheck 2026.2.2 is module version v0.8.2 of honnef.co/go/tools.
STATICCHECK_VERSION ?= v0.8.2
# Helm, for `helm lint --strict` of charts/keysmith (the tests render the chart through the
# Helm SDK of the same version, pinned in go.mod).
HELM_VERSION ?= v3.22.0
IMG ?= keysmith:latest
# The version `kubectl keysmith version` prints (git describe, else devel).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

export GOTOOLCHAIN := local
export KUBE_VERSION ETCD_VERSION
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
STATICCHECK ?= $(LOCALBIN)/staticcheck-$(STATICCHECK_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)

.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: dev
dev: manifests envtest ## Run a local control plane with the operator and samples (Ctrl-C stops it).
	go build -o bin/keysmith-dev ./hack/dev
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" exec bin/keysmith-dev

.PHONY: manifests
manifests: controller-gen ## Generate CRDs, RBAC and the webhook configuration into config/, and the chart's copies of them.
	$(CONTROLLER_GEN) rbac:roleName=keysmith-manager crd webhook paths="./api/..." paths="./controllers/..." paths="./internal/webhook/..." paths="./internal/servingcert/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook
	go run ./hack/chartgen

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the module (CI then fails if that changed a committed file).
	@out="$$(gofmt -l -w $$(find . -name '*.go' -not -path './bin/*' -not -path './.git/*'))"; \
	if [ -n "$$out" ]; then echo "gofmt rewrote:"; echo "$$out"; fi

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: staticcheck helm ## Run staticcheck (dead code, deprecated calls, bugs) and helm lint --strict on the chart.
	$(STATICCHECK) ./...
	$(HELM) lint --strict charts/keysmith
	for f in charts/keysmith/ci/*-values.yaml; do $(HELM) lint --strict charts/keysmith -f "$$f"; done

.PHONY: test
test: manifests generate build-installer fmt vet envtest ## Run vet, unit tests and the envtest suites against a real API server.
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go test ./... -count=1

.PHONY: test-race
test-race: manifests generate envtest ## make test under the race detector, the processes the fault and HA tests run built with -race too (a race ends them; not in CI: about 10 minutes here).
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" KEYSMITH_TEST_BUILD_FLAGS=-race GORACE=halt_on_error=1 go test -race ./... -count=1

.PHONY: bench
bench: ## Run the Go benchmarks of the hot paths and the loopback load run (ratios vs a trivial handler).
	go test ./internal/... -run='^$$' -bench=. -benchmem
	go run ./test/load

.PHONY: bench-scale
bench-scale: envtest ## Issue 10 000 credentials against a local control plane: credentials/s per worker count, RSS per credential, restarts (about 8 minutes; not in CI).
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go run ./test/scale -n 10000

.PHONY: soak
soak: envtest ## Ten minutes of mixed load (tokens, /authz, rotations, deactivations, deletes) against a local control plane; fails on unexpected errors or heap growth over 10 % (not in CI).
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go run ./test/soak

.PHONY: fuzz
fuzz: ## Run each fuzz target for a short while.
	go test ./internal/credential -run='^$$' -fuzz=FuzzParseSecret -fuzztime=30s
	go test ./internal/credential -run='^$$' -fuzz=FuzzVerify -fuzztime=30s
	go test ./internal/tokenserver -run='^$$' -fuzz=FuzzTokenRequest -fuzztime=30s
	go test ./internal/tokenserver -run='^$$' -fuzz=FuzzAuthorizationHeader -fuzztime=30s
	go test ./internal/tokenserver -run='^$$' -fuzz=FuzzOriginalRequest -fuzztime=30s
	go test ./internal/tokenserver -run='^$$' -fuzz='^FuzzVerify$$' -fuzztime=30s
	go test ./controllers -run='^$$' -fuzz=FuzzCachedFacts -fuzztime=30s

##@ Build

.PHONY: build
build: generate ## Build the manager, the token server and the kubectl plugin (kubectl-keysmith, kubectl_complete-keysmith) into bin/.
	CGO_ENABLED=0 go build -trimpath -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -o bin/token-server ./cmd/token-server
	CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/keysmith-dev/keysmith/internal/cli.version=$(VERSION)" -o bin/kubectl-keysmith ./cmd/kubectl-keysmith
	CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/keysmith-dev/keysmith/internal/cli.version=$(VERSION)" -o bin/kubectl_complete-keysmith ./cmd/kubectl_complete-keysmith

.PHONY: build-installer
build-installer: manifests ## Render config/default into dist/install.yaml (one file for kubectl apply -f).
	mkdir -p dist
	go run ./hack/kustomize config/default > dist/install.yaml.tmp
	mv dist/install.yaml.tmp dist/install.yaml

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Tools

.PHONY: envtest
envtest: ## Download (setup-envtest) or build (Go module proxy) kube-apiserver, etcd and kube-controller-manager into bin/.
	hack/setup-envtest.sh >/dev/null

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.
$(CONTROLLER_GEN):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)

.PHONY: helm
helm: $(HELM) ## Build helm from the Go module proxy into bin/.
$(HELM):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install -ldflags "$(foreach p,chartutil lint/rules,-X helm.sh/helm/v3/pkg/$(p).k8sVersionMajor=$(word 1,$(subst ., ,$(KUBE_VERSION))) -X helm.sh/helm/v3/pkg/$(p).k8sVersionMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))))" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $(HELM)

.PHONY: staticcheck
staticcheck: $(STATICCHECK) ## Install staticcheck into bin/.
$(STATICCHECK):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(LOCALBIN)/staticcheck $(STATICCHECK)
