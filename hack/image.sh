#!/usr/bin/env bash
# The operator's OCI image, built without Docker: a Debian root filesystem (debootstrap, minbase
# plus Debian's python3), the pinned wheels of deploy/image/requirements.txt and the operator's own
# wheel in /usr/local/lib/python3.11/dist-packages, packed with umoci and skopeo. The Dockerfile
# builds the same image with Docker; tests/unit/test_image.py keeps the two recipes equal.
#
#   hack/image.sh build    build (or reuse) the image; prints its reference and its tarball
#   hack/image.sh ref      print the reference only (what `make deploy` gives Helm)
#   hack/image.sh lock     re-resolve deploy/image/requirements.txt from pyproject.toml, within
#                          the development lock's pins and with its hashes (`make lock` runs it
#                          after pip-compile), then the gp flavour's deploy/image/requirements-gp.txt
#
# FLAVOUR=gp builds the gp flavour: the same image plus PyTorch for algorithm gp (pyproject.toml's
# gp extra, pinned with hashes in deploy/image/requirements-gp.txt), tagged <version>-gp-<hash>.
# The PyPI wheel of PyTorch for Linux brings CUDA's libraries: the flavour is gigabytes larger.
#
# The tarball is named by a hash of everything the image is made of (the recipe below, the lock,
# pyproject.toml, the operator's sources and the dashboard's pages), so a change to any of them
# rebuilds it, and nothing else does. Its tag carries the same hash: a rebuilt image has a new
# reference and `make deploy` rolls the operator onto it. Tarballs live in $HPO_CACHE/images,
# beside the real node's.
set -Eeuo pipefail

# shellcheck source=lib/paths.sh
source "$(dirname "$0")/lib/paths.sh"
source "$repo/hack/lib/common.sh"
source "$repo/hack/lib/oci.sh"
images=$cache/images
mirror=${HPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Keep these equal to the Dockerfile's (tests/unit/test_image.py checks).
suite=bookworm
debian_packages=python3
site=usr/local/lib/python3.11/dist-packages
user=65532:65532
lock=$repo/deploy/image/requirements.txt
gp_lock=$repo/deploy/image/requirements-gp.txt
repository=hpo-operator
flavour=${FLAVOUR:-}
case "$flavour" in
  "" | gp) ;;
  *) echo "FLAVOUR=$flavour: the image's flavours are the default (none) and gp" >&2; exit 2 ;;
esac

app_version() {
  sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/deploy/helm/hpo-operator/Chart.yaml"
}

image_key() {
  {
    echo "$suite $debian_packages $site $user $flavour"
    declare -f build pack_image strip_rootfs
    cat "$lock" "$repo/pyproject.toml"
    if [ "$flavour" = gp ]; then cat "$gp_lock"; fi
    (cd "$repo" && find operator -type f \( -name '*.py' -o -name py.typed -o -path '*/dashboard/static/*' \) |
      LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -c1-12
}

ref() { echo "$repository:$(app_version)${flavour:+-$flavour}-${1:-$(image_key)}"; }

# What the operator does not need at run time: package manager state, documentation, locales, the
# stdlib's tests, GUI and packaging tools, and the wheels' own test suites and type stubs.
strip_rootfs() {
  local root=$1
  (cd "$root" && rm -rf var/cache/apt/* var/lib/apt/lists/* var/log/* usr/share/doc usr/share/man \
    usr/share/info usr/share/locale usr/share/lintian usr/share/zoneinfo debootstrap \
    usr/lib/python3.11/test usr/lib/python3.11/idlelib usr/lib/python3.11/tkinter \
    usr/lib/python3.11/lib2to3 usr/lib/python3.11/ensurepip usr/lib/python3.11/pydoc_data)
  find "$root/$site" -depth -type d \( -name tests -o -name test -o -name __pycache__ \) \
    -exec rm -rf {} +
  find "$root/$site" -name '*.pyi' -delete
}

build() {
  local out=$1 work
  work=$(mktemp -d "$images/operator.XXXXXX")
  log "building the operator's image (debootstrap $suite minbase + $debian_packages, pinned wheels; a few minutes)"
  if ! debootstrap --variant=minbase --include="$debian_packages" "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    log "debootstrap $suite from $mirror failed: $(tail -n 3 "$work/debootstrap.log")"
    return 1
  fi
  # The wheels are resolved by the lock alone (--no-deps): the image holds exactly its pins, and
  # each file must match one of its pin's hashes (--require-hashes). The operator's own wheel, built
  # here from the sources, has no hash to check: it is installed on its own, after them.
  "$python" -m pip install --quiet --no-compile --no-deps --only-binary=:all: --require-hashes \
    --target "$work/rootfs/$site" -r "$lock"
  if [ "$flavour" = gp ]; then
    "$python" -m pip install --quiet --no-compile --no-deps --only-binary=:all: --require-hashes \
      --target "$work/rootfs/$site" -r "$gp_lock"
  fi
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$repo" >/dev/null 2>&1
  "$python" -m pip install --quiet --no-compile --no-deps --target "$work/rootfs/$site" "$work"/wheel/*.whl
  rm -rf "$work/rootfs/$site/bin"
  strip_rootfs "$work/rootfs"
  # The root filesystem is read-only at run time: bytecode is compiled now, by the image's own
  # Python, and trusted without a timestamp check.
  chroot "$work/rootfs" /usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash "/$site"
  echo "hpo:x:65532:65532:hpo-operator:/tmp:/usr/sbin/nologin" >>"$work/rootfs/etc/passwd"
  echo "hpo:x:65532:" >>"$work/rootfs/etc/group"
  pack_image "$2" "$work/rootfs" "$out" \
    --config.entrypoint python3 --config.entrypoint -m --config.entrypoint hpo_operator \
    --config.user "$user" --config.workingdir /tmp \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env HOME=/tmp \
    --config.env PYTHONUNBUFFERED=1 --config.env PYTHONDONTWRITEBYTECODE=1 \
    --config.exposedports 8080/tcp --config.exposedports 9090/tcp \
    --config.label org.opencontainers.image.title=hpo-operator \
    --config.label "org.opencontainers.image.version=$(app_version)"
  rm -rf "$work"
}

cmd_build() {
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
  local missing=() tool
  for tool in debootstrap umoci skopeo; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  mkdir -p "$images"
  # One build at a time in the cache (checkouts share it): what another build is making is neither
  # an interrupted build's leftovers nor an older image to remove.
  exec 9>"$images/build.lock"
  flock 9
  local work
  for work in "$images"/operator.* "$images"/pack.*; do  # an interrupted build
    [ -d "$work" ] && rm -rf "$work"
  done
  local key tar name=operator${flavour:+-$flavour}
  key=$(image_key)
  tar=$images/$name-$key.tar
  [ -s "$tar" ] || build "$tar" "$(ref "$key")"
  # Older builds of the operator (of this flavour) are no longer used, unless another checkout built
  # one within the hour (it may be importing it now).
  find "$images" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$key.tar" ! -name "operator-gp-*.tar" -mmin +60 -delete
  if [ "$flavour" = gp ]; then
    find "$images" -maxdepth 1 -name 'operator-gp-*.tar' ! -name "$name-$key.tar" -mmin +60 -delete
  fi
  echo "$(ref "$key") $tar"
}

# Resolves the operator's dependencies (pyproject.toml's, less those only the kubectl plugin uses:
# [tool.hpo-operator] cli-only-dependencies) for this Python, as exact pins, each with the hashes the
# development lock has for it. The development lock constrains the resolution, so the image runs the
# very files that the tests ran (hack/check-locks.py checks that the two agree, hashes included).
cmd_lock() {
  local reqs report
  reqs=$("$python" - "$repo/pyproject.toml" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
cli_only = set(project["tool"]["hpo-operator"]["cli-only-dependencies"])
for req in project["project"]["dependencies"]:
    if re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0] not in cli_only:
        print(req)
PY
)
  report=$(mktemp)
  # shellcheck disable=SC2086 # $reqs split on purpose: one requirement a word, none has a space
  "$python" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --report "$report" -c "$repo/requirements-dev.txt" $reqs
  # The hashes come from the development lock, read by hack/check-locks.py's own parser.
  "$python" - "$repo" "$report" "$lock" <<'PY'
import importlib.util, json, sys
from pathlib import Path
repo, report, lock = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
spec = importlib.util.spec_from_file_location("check_locks", repo / "hack" / "check-locks.py")
locks = sys.modules["check_locks"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
problems = []
dev = locks.read_dev_lock(repo / locks.DEV_LOCK, problems)
if problems:
    sys.exit("\n".join(problems))
lines = [
    "# The operator image's Python packages, pinned with their hashes (hack/image.sh lock writes this",
    "# file from pyproject.toml, within the pins of requirements-dev.txt and with its hashes; the",
    "# Dockerfile and hack/image.sh install exactly these, with --require-hashes and --no-deps).",
]
items = json.load(open(report))["install"]
for name, version in sorted((i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in items):
    pin = dev.get(locks.canonicalize_name(name))
    if pin is None or pin.version != version:
        sys.exit(f"{name}=={version} is not pinned in {locks.DEV_LOCK}: run make lock")
    lines.append(locks.format_pin(name, version, pin.hashes))
lock.write_text("\n".join(lines) + "\n")
PY
  rm -f "$report"
  log "wrote $lock"
  lock_gp
}

# The gp flavour's lock: pyproject.toml's gp extra resolved with the image's lock as constraints,
# hashed, less what the image's lock pins already (both are installed, one after the other).
lock_gp() {
  local work
  work=$(mktemp -d)
  "$python" - "$repo/pyproject.toml" >"$work/gp.in" <<'PY'
import sys, tomllib
for req in tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["gp"]:
    print(req)
PY
  CUSTOM_COMPILE_COMMAND="make lock" "$python" -m piptools compile --quiet --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-find-links --no-emit-index-url --no-header --no-annotate \
    -c "$lock" --output-file "$work/gp.txt" "$work/gp.in"
  "$python" - "$repo" "$work/gp.txt" "$gp_lock" <<'PY'
import importlib.util, sys
from pathlib import Path
repo, compiled, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
spec = importlib.util.spec_from_file_location("check_locks", repo / "hack" / "check-locks.py")
locks = sys.modules["check_locks"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
problems = []
image = locks.read_hashed_lock(repo / locks.IMAGE_LOCK, locks.IMAGE_LOCK, "", problems)
gp = locks.read_hashed_lock(compiled, "the gp lock", "", problems)
if problems:
    sys.exit("\n".join(problems))
lines = [
    "# The gp image flavour's Python packages beyond deploy/image/requirements.txt: pyproject.toml's gp",
    "# extra (PyTorch for algorithm gp) and what it needs, pinned with their hashes (hack/image.sh lock",
    "# writes this file; hack/image.sh and the Dockerfile install it after the image's lock for FLAVOUR=gp).",
]
for name, pin in sorted(gp.items()):
    if name not in image:
        lines.append(locks.format_pin(name, pin.version, pin.hashes))
out.write_text("\n".join(lines) + "\n")
PY
  rm -rf "$work"
  log "wrote $gp_lock"
}

python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
case "${1:-}" in
  build) cmd_build ;;
  ref) ref ;;
  lock) cmd_lock ;;
  *) echo "usage: $0 build|ref|lock" >&2; exit 2 ;;
esac
