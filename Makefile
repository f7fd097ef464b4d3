# hpo-operator. `make demo` runs the main job, `make test` the tests; see README.md and docs/.
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
        demo operator install-crds kind-up kind-down kind-test clean docs

# Every target says what it does in a `## ` comment on its own line; help lists them all
# (tests/unit/test_makefile.py checks that none is left out).
help:  ## this list
	@awk -F':.*## ' '/^[a-z][a-z0-9-]*:.*## / {printf "make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The development environment comes from the lock alone (requirements-dev.txt, hashed pins of
# pyproject.toml's dependencies and its test, bench and docs extras, the installer and the build backend;
# `make lock` writes it): a fresh venv gets what was last tested, not whatever is newest. The project itself is
# then installed editable without resolving anything (--no-deps) and built by the locked setuptools
# (--no-build-isolation), so nothing outside the lock is fetched.
$(VENV)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed  ## the development environment from the lock (.venv)

# Refreshes the locks: requirements-dev.txt from pyproject.toml and requirements-dev.in, keeping
# every pin that still satisfies them (LOCK_ARGS=--upgrade moves all to their newest versions,
# LOCK_ARGS="-P optuna" one package), then the image's lock within those pins, then checks both.
# pip-compile resolves with pip itself (the lock's own pip), so the lock is what pip installs, under
# pip's settings (index, certificates); a machine's find-links or index URL stay out of the file.
lock: venv  ## refresh requirements-dev.txt and the image's lock (LOCK_ARGS=--upgrade: newest)
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
	  --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url --extra test --extra bench --extra docs \
	  $(LOCK_ARGS) --output-file requirements-dev.txt pyproject.toml requirements-dev.in
	PYTHON=$(PY) hack/image.sh lock
	$(PY) hack/check-locks.py

lock-check: venv  ## check the locks against pyproject.toml
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

lint: lint-shell lint-chart lock-check lint-python  ## shellcheck, helm lint, the locks' check, ruff, mypy (no cluster; builds helm as make tools)

lint-shell:  ## shellcheck on every shell script
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

lint-python: venv  ## ruff (lint and format) and mypy
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(addprefix -p hpo_operator.,$(MYPY_PACKAGES))

lint-chart: tools  ## helm lint --strict on the chart, with its default values and the real node's
	$(HPO_CACHE)/bin/helm lint --strict $(CHART)
	$(HPO_CACHE)/bin/helm lint --strict $(CHART) -f deploy/local/real-node-values.yaml

tools:  ## build the local control plane's binaries (and helm) into HPO_CACHE
	hack/build-tools.sh

cluster: tools  ## start the local control plane, print its kubeconfig
	@hack/cluster.sh up

cluster-down:  ## stop it (and its real node and training controllers)
	@hack/cluster.sh down

cluster-status:  ## say whether it is up
	@hack/cluster.sh status

crds: venv  ## regenerate crds/ and the chart's copies from the pydantic models
	$(PY) -m hpo_operator.api.crd
	@$(MAKE) --no-print-directory chart-crds

crds-check: venv  ## check that crds/ is what the models generate
	$(PY) -m hpo_operator.api.crd --check

# hack/test.sh starts (and stops) the local control plane unless HPO_KUBECONFIG names a cluster to
# use (then its binaries are not built), runs the tests in HPO_TEST_WORKERS parallel workers (4;
# 0: one process), then those marked `alone` one at a time; "no tests ran" is a failure here.
test: venv $(if $(HPO_KUBECONFIG),,tools)  ## unit and integration tests (starts the local cluster unless HPO_KUBECONFIG names one)
	PY=$(PY) hack/test.sh $(PYTEST_ARGS)

test-unit: venv  ## unit tests only (no cluster)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/, which git ignores. --strict: a link to a
# missing page or anchor fails the build (tests/unit/test_docs.py builds it too, in make test).
# NO_MKDOCS_2_WARNING: the theme's notice about its successor, printed on every build.
docs: venv  ## the documentation site into site/ (mkdocs build --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

install-crds: cluster  ## apply crds/ to the local cluster
	$(HPO_CACHE)/bin/kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply -f crds/

operator: venv  ## run the operator against KUBECONFIG (or the local cluster)
	KUBECONFIG=$${KUBECONFIG:-$(KUBECONFIG_LOCAL)} $(PY) -m hpo_operator

demo: venv cluster  ## local cluster + operator + example experiment, trials shown
	hack/demo.sh $(KUBECONFIG_LOCAL)

# --- kind, for machines with Docker -------------------------------------------------------
kind-up:  ## a kind cluster (needs Docker)
	kind create cluster --name $(KIND_CLUSTER) --kubeconfig $(CURDIR)/.kind-kubeconfig

kind-test: venv  ## the tests on that kind cluster
	HPO_KUBECONFIG=$(CURDIR)/.kind-kubeconfig $(PY) -m pytest $(PYTEST_ARGS)

kind-down:  ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

clean: cluster-down  ## stop the cluster and remove .cluster and .venv
	rm -rf .cluster $(VENV) .kind-kubeconfig

# The Helm chart ships copies of crds/ (Helm installs a chart's crds/ first); `make crds` runs it.
# tests/unit/test_helm_chart.py checks that the copies are identical.
.PHONY: chart-crds
chart-crds:  ## copy crds/ into the chart (make crds does it too)
	cp crds/*.yaml deploy/helm/hpo-operator/crds/

# A real node (kubelet + containerd, hack/real-node.sh) beside the KWOK nodes: trial pods really
# run there. `make demo` then uses examples/real-sklearn.yaml; `make cluster-down` stops it too.
.PHONY: cluster-real real-node-down
cluster-real: tools  ## the local control plane and a real node (kubelet, containerd)
	@KUBELET=real hack/cluster.sh up

real-node-down:  ## stop the real node alone
	@hack/real-node.sh down

# JobSet, Kueue and Kubeflow Trainer v2 (hack/training.sh) on the local cluster, for distributed
# trials and queues: built once from their pinned Go modules (hack/build-training.sh, minutes on a
# cold cache), then started as host processes in seconds. `make cluster-down` stops them too.
.PHONY: cluster-training training-down
cluster-training: cluster  ## the local control plane plus JobSet, Kueue and Kubeflow Trainer
	@hack/training.sh up

training-down:  ## stop the training controllers alone
	@hack/training.sh down

# The operator's image without Docker (hack/image.sh; `docker build .` gives the same image), and
# the operator installed by Helm onto the real node of `make cluster-real` (hack/deploy.sh).
.PHONY: image deploy undeploy
image: venv  ## the operator's image, built without Docker (hack/image.sh)
	@hack/image.sh build

deploy: venv tools  ## helm install the image onto the real node of make cluster-real
	@hack/deploy.sh

undeploy:  ## helm uninstall it
	$(HPO_CACHE)/bin/helm uninstall --kubeconfig $(KUBECONFIG_LOCAL) -n hpo-system hpo-operator

# Benchmarks of the search algorithms (bench/README.md): printed tables, not part of `make test`.
.PHONY: bench bench-scale bench-dashboard
bench: venv  ## tuning-quality and suggestion-latency benchmarks (bench/README.md)
	$(PY) bench/tuning_quality.py
	$(PY) bench/suggestion_latency.py
	$(PY) bench/tabular_quality.py

# The control loop at scale against the raw API floor, on the local cluster (about 45 minutes;
# BENCH_ARGS="--cases 200x20,unrelated" for a few cases).
bench-scale: venv tools  ## the operator against the raw API floor at scale (BENCH_ARGS="--cases 200x20")
	$(PY) bench/scale.py $(BENCH_ARGS)

# The fault soak (bench/soak.py): 2,000 configurations x 200 parallel while the API server, the
# operator and its leader are broken at random; exact checks afterwards
# (docs/control-plane-restarts.md). Not in `make test`. BENCH_ARGS="--seeds 50 --parallel 20" for a short one.
.PHONY: soak
soak: venv tools  ## the fault soak: a large experiment while the control plane breaks (docs/control-plane-restarts.md)
	$(PY) bench/soak.py $(BENCH_ARGS)

# The dashboard's page of a 10,000-trial experiment, measured in headless Chromium (a few minutes
# to create the trials; BENCH_ARGS="--namespace dash-10k --keep" keeps them for the next run).
bench-dashboard: venv  ## the dashboard's page of a 10,000-trial experiment, in a browser
	$(PY) bench/dashboard_scale.py $(BENCH_ARGS)
