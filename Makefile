# hpo-operator. `make demo` runs the main job, `make test` the tests; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HPO_CACHE ?= $(HOME)/.cache/hpo-operator
KUBECONFIG_LOCAL := $(CURDIR)/.cluster/kubeconfig
KIND_CLUSTER ?= hpo
PYTEST_ARGS ?=
LOCK_ARGS ?=

.PHONY: help venv lock lock-check lint lint-shell lint-chart lint-python tools cluster cluster-down cluster-status crds crds-check test test-unit \
        demo operator install-crds kind-up kind-down kind-test clean

help:
	@echo "make demo          local cluster + operator + example experiment, trials shown"
	@echo "make test          unit and integration tests (starts the local cluster if needed)"
	@echo "make lint          shellcheck, helm lint, the locks' check, ruff, mypy (no cluster; builds helm as make tools)"
	@echo "make lock          refresh requirements-dev.txt and the image's lock (LOCK_ARGS=--upgrade: newest)"
	@echo "make cluster       start the local control plane, print its kubeconfig"
	@echo "make cluster-down  stop it"
	@echo "make cluster-training  the same, plus JobSet, Kueue and Kubeflow Trainer (hack/training.sh)"
	@echo "make operator      run the operator against \$$KUBECONFIG (or the local cluster)"
	@echo "make crds          regenerate crds/ from the pydantic models"
	@echo "make bench-scale   the operator against the raw API floor at scale (bench/README.md)"
	@echo "make bench-dashboard  the dashboard's page of a 10,000-trial experiment, in a browser"
	@echo "make soak          the fault soak: a large experiment while the control plane breaks (README)"
	@echo "make image         the operator's image, built without Docker (hack/image.sh)"
	@echo "make deploy        helm install it onto the real node of make cluster-real"
	@echo "make kind-up / kind-test / kind-down   the same tests on a kind cluster (needs Docker)"

# The development environment comes from the lock alone (requirements-dev.txt, hashed pins of
# pyproject.toml's dependencies and its test and bench extras, the installer and the build backend;
# `make lock` writes it): a fresh venv gets what was last tested, not whatever is newest. The project itself is
# then installed editable without resolving anything (--no-deps) and built by the locked setuptools
# (--no-build-isolation), so nothing outside the lock is fetched.
$(VENV)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# Refreshes the locks: requirements-dev.txt from pyproject.toml and requirements-dev.in, keeping
# every pin that still satisfies them (LOCK_ARGS=--upgrade moves all to their newest versions,
# LOCK_ARGS="-P optuna" one package), then the image's lock within those pins, then checks both.
# pip-compile resolves with pip itself (the lock's own pip), so the lock is what pip installs, under
# pip's settings (index, certificates); a machine's find-links or index URL stay out of the file.
lock: venv
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
	  --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url --extra test --extra bench \
	  $(LOCK_ARGS) --output-file requirements-dev.txt pyproject.toml requirements-dev.in
	PYTHON=$(PY) hack/image.sh lock
	$(PY) hack/check-locks.py

lock-check: venv
	$(PY) hack/check-locks.py

# Static checks, no cluster needed (helm comes from make tools; .ci/run runs them before the tests):
# shellcheck on every shell script (.shellcheckrc has it follow their sources), helm lint on the
# chart with its default values and with the local real node's (--strict: a warning fails too), the
# locks against pyproject.toml, then ruff (lint and format) and mypy, both configured in
# pyproject.toml, at the versions the lock pins.
SHELL_SCRIPTS := $(wildcard hack/*.sh hack/lib/*.sh hack/real-node/*.sh) .ci/run
CHART := deploy/helm/hpo-operator
# What ruff and mypy cover: ruff the whole tree; mypy the floors pyproject.toml makes strict (the
# pure floors; the rest is glue around untyped libraries: kopf, the Kubernetes clients, typer).
LINT_PATHS := .
MYPY_PACKAGES := api core planner workloads

lint: lint-shell lint-chart lock-check lint-python

lint-shell:
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

lint-python: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(addprefix -p hpo_operator.,$(MYPY_PACKAGES))

lint-chart: tools
	$(HPO_CACHE)/bin/helm lint --strict $(CHART)
	$(HPO_CACHE)/bin/helm lint --strict $(CHART) -f deploy/local/real-node-values.yaml

tools:
	hack/build-tools.sh

cluster: tools
	@hack/cluster.sh up

cluster-down:
	@hack/cluster.sh down

cluster-status:
	@hack/cluster.sh status

crds: venv
	$(PY) -m hpo_operator.api.crd

crds-check: venv
	$(PY) -m hpo_operator.api.crd --check

# Integration tests start (and stop) the local control plane themselves unless HPO_KUBECONFIG
# names a cluster to use; pytest's "no tests ran" (exit 5) is a failure here.
test: venv tools
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

install-crds: cluster
	$(HPO_CACHE)/bin/kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply -f crds/

operator: venv
	KUBECONFIG=$${KUBECONFIG:-$(KUBECONFIG_LOCAL)} $(PY) -m hpo_operator

demo: venv cluster
	hack/demo.sh $(KUBECONFIG_LOCAL)

# --- kind, for machines with Docker -------------------------------------------------------
kind-up:
	kind create cluster --name $(KIND_CLUSTER) --kubeconfig $(CURDIR)/.kind-kubeconfig

kind-test: venv
	HPO_KUBECONFIG=$(CURDIR)/.kind-kubeconfig $(PY) -m pytest $(PYTEST_ARGS)

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

clean: cluster-down
	rm -rf .cluster $(VENV) .kind-kubeconfig

# The Helm chart ships copies of crds/ (Helm installs a chart's crds/ first); run after `make crds`.
# tests/unit/test_helm_chart.py checks that the copies are identical.
.PHONY: chart-crds
chart-crds:
	cp crds/*.yaml deploy/helm/hpo-operator/crds/

# A real node (kubelet + containerd, hack/real-node.sh) beside the KWOK nodes: trial pods really
# run there. `make demo` then uses examples/real-sklearn.yaml; `make cluster-down` stops it too.
.PHONY: cluster-real real-node-down
cluster-real: tools
	@KUBELET=real hack/cluster.sh up

real-node-down:
	@hack/real-node.sh down

# JobSet, Kueue and Kubeflow Trainer v2 (hack/training.sh) on the local cluster, for distributed
# trials and queues: built once from their pinned Go modules (hack/build-training.sh, minutes on a
# cold cache), then started as host processes in seconds. `make cluster-down` stops them too.
.PHONY: cluster-training training-down
cluster-training: cluster
	@hack/training.sh up

training-down:
	@hack/training.sh down

# The operator's image without Docker (hack/image.sh; `docker build .` gives the same image), and
# the operator installed by Helm onto the real node of `make cluster-real` (hack/deploy.sh).
.PHONY: image deploy undeploy
image: venv
	@hack/image.sh build

deploy: venv tools
	@hack/deploy.sh

undeploy:
	$(HPO_CACHE)/bin/helm uninstall --kubeconfig $(KUBECONFIG_LOCAL) -n hpo-system hpo-operator

# Benchmarks of the search algorithms (bench/README.md): printed tables, not part of `make test`.
.PHONY: bench bench-scale bench-dashboard
bench: venv
	$(PY) bench/tuning_quality.py
	$(PY) bench/suggestion_latency.py
	$(PY) bench/tabular_quality.py

# The control loop at scale against the raw API floor, on the local cluster (about 45 minutes;
# BENCH_ARGS="--cases 200x20,unrelated" for a few cases).
bench-scale: venv tools
	$(PY) bench/scale.py $(BENCH_ARGS)

# The fault soak (bench/soak.py): 2,000 configurations x 200 parallel while the API server, the
# operator and its leader are broken at random; exact checks afterwards (README, "When the control
# plane restarts"). Not in `make test`. BENCH_ARGS="--seeds 50 --parallel 20" for a short one.
.PHONY: soak
soak: venv tools
	$(PY) bench/soak.py $(BENCH_ARGS)

# The dashboard's page of a 10,000-trial experiment, measured in headless Chromium (a few minutes
# to create the trials; BENCH_ARGS="--namespace dash-10k --keep" keeps them for the next run).
bench-dashboard: venv
	$(PY) bench/dashboard_scale.py $(BENCH_ARGS)
