#!/usr/bin/env python3
"""Checks that the locks agree with pyproject.toml and with each other (`make lint`; also run by
tests/unit/test_locks.py, on this repo and on broken copies of it).

- requirements-dev.txt (pip-compile's output, `make lock`): every line an exact pin with hashes;
  every dependency of pyproject.toml (its extras DEV_EXTRAS: the tests', the benchmarks' and the docs', which
  `make lock` passes with --extra; its build-system.requires) and every line of requirements-dev.in
  pinned, at a version its specifier allows; the lock's direct dependencies are exactly those (a
  dependency dropped from pyproject.toml must leave the lock too), and every pin is needed by one
  of them.
- deploy/image/requirements.txt (hack/image.sh lock): the operator's part of the development lock,
  at the same versions and with the same hashes: the dependencies of pyproject.toml less the
  kubectl plugin's own ([tool.hpo-operator] cli-only-dependencies), with everything they need and
  nothing else; every pin with its hashes, since both image recipes install it with --require-hashes.
- deploy/image/requirements-gp.txt (hack/image.sh lock): the gp flavour's addition, pyproject.toml's
  gp extra (PyTorch) and what it needs that the image's lock lacks, every pin hashed; it is not in
  the development lock (gigabytes of CUDA libraries the tests do not need).

`make venv` installs the first, the image the second: so the image runs the very files the tests ran.
Usage: hack/check-locks.py [REPO]   (exit status 1 and one line per problem when they disagree)
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

DEV_LOCK = "requirements-dev.txt"
DEV_INPUT = "requirements-dev.in"
DEV_EXTRAS = ("test", "bench", "docs")
IMAGE_LOCK = "deploy/image/requirements.txt"
# The gp flavour's lock (hack/image.sh lock): pyproject.toml's gp extra and what it needs beyond
# the image's lock, hashed; never in the development lock (PyTorch with CUDA is gigabytes).
GP_LOCK = "deploy/image/requirements-gp.txt"
GP_EXTRA = "gp"
# How pip-compile's annotations name the two sources of direct dependencies.
PYPROJECT_SOURCE = re.compile(r"^\S+ \(pyproject\.toml\)$")
INPUT_SOURCE = f"-r {DEV_INPUT}"


@dataclass
class Pin:
    version: str
    line: int
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_hashed_lock(path: Path, label: str, installer: str, problems: list[str]) -> dict[str, Pin]:
    """pip-compile's format (the image's lock uses it too): `name==version \\`, its `--hash=`
    lines, then `# via` annotations (the development lock's only). installer: what installs the
    lock with --require-hashes, for the message when a pin has no hash."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not raw[0].isspace() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?", line)
            if not match:
                problems.append(f"{label}:{number}: not an exact pin: {line}")
                current = None
                continue
            current = pins[canonicalize_name(match[1])] = Pin(match[2], number)
            in_via = False
        elif current is None:
            continue
        elif line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash=").rstrip("\\").strip())
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            current.via += [rest] if rest else []
            in_via = not rest
        elif in_via and line.startswith("#   "):
            current.via.append(line.removeprefix("#").strip())
        else:
            in_via = False
    for name, pin in pins.items():
        if not pin.hashes:
            problems.append(f"{label}:{pin.line}: {name} has no --hash ({installer} installs with --require-hashes)")
    return pins


def read_dev_lock(path: Path, problems: list[str]) -> dict[str, Pin]:
    return read_hashed_lock(path, DEV_LOCK, "make venv", problems)


def format_pin(name: str, version: str, hashes: list[str]) -> str:
    """One pin as pip-compile writes it (hack/image.sh lock writes the image's lock with this)."""
    return " \\\n".join([f"{name}=={version}", *(f"    --hash={h}" for h in sorted(hashes))])


def read_input(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def requirements(specs: list[str], where: str, problems: list[str]) -> list[Requirement]:
    """The requirements that apply to this Python and platform (as pip-compile resolved them)."""
    result = []
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement as error:
            problems.append(f"{where}: {spec!r} is not a requirement: {error}")
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            result.append(req)
    return result


def check_pinned(reqs: list[Requirement], pins: dict[str, Pin], lock: str, where: str, problems: list[str]) -> None:
    for req in reqs:
        name = canonicalize_name(req.name)
        pin = pins.get(name)
        version = pin.version if pin is not None else None
        if version is None:
            problems.append(f"{where} needs {req}, which {lock} does not pin (make lock)")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{where} needs {req}, but {lock} pins {name}=={version} (make lock)")


def closure(roots: set[str], pins: dict[str, Pin]) -> set[str]:
    """Everything the roots need, as the development lock's `# via` annotations record it."""
    needs: dict[str, set[str]] = {}
    for name, pin in pins.items():
        for parent in pin.via:
            needs.setdefault(canonicalize_name(parent), set()).add(name)
    seen, todo = set(), [r for r in roots if r in pins]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += needs.get(name, ())
    return seen


def check(repo: Path) -> list[str]:
    problems: list[str] = []
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    dev = read_dev_lock(repo / DEV_LOCK, problems)
    image = read_hashed_lock(repo / IMAGE_LOCK, IMAGE_LOCK, "the image's Dockerfile and hack/image.sh", problems)

    runtime = requirements(project["project"]["dependencies"], "pyproject.toml", problems)
    extras = project["project"].get("optional-dependencies", {})
    dev_extras = {name: requirements(extras.get(name, []), f"pyproject.toml [{name}]", problems) for name in DEV_EXTRAS}
    extra_reqs = [r for reqs in dev_extras.values() for r in reqs]
    build = requirements(project["build-system"]["requires"], "pyproject.toml build-system", problems)
    dev_input = requirements(read_input(repo / DEV_INPUT), DEV_INPUT, problems)
    for reqs, where in (
        (runtime, "pyproject.toml"),
        *((reqs, f"pyproject.toml [{name}]") for name, reqs in dev_extras.items()),
        (build, "pyproject.toml build-system"),
        (dev_input, DEV_INPUT),
    ):
        check_pinned(reqs, dev, DEV_LOCK, where, problems)

    # The lock's direct dependencies are those of its sources, no more: pip-compile annotates each
    # with its source, so a dependency dropped from pyproject.toml but left in the lock shows here.
    sources = {
        "pyproject.toml": (
            {canonicalize_name(r.name) for r in runtime + extra_reqs},
            lambda via: bool(PYPROJECT_SOURCE.match(via)),
        ),
        DEV_INPUT: ({canonicalize_name(r.name) for r in dev_input}, lambda via: via == INPUT_SOURCE),
    }
    for source, (declared, is_source) in sources.items():
        annotated = {name for name, pin in dev.items() if any(map(is_source, pin.via))}
        for name in sorted(annotated - declared):
            problems.append(f"{DEV_LOCK} pins {name} for {source}, which no longer asks for it (make lock)")
    roots = {canonicalize_name(r.name) for r in runtime + extra_reqs + build + dev_input}
    for name in sorted(set(dev) - closure(roots, dev)):
        problems.append(f"{DEV_LOCK} pins {name}, which nothing needs (make lock)")

    # The image's lock: the operator's dependencies and what they need, at the development pins.
    cli_only = {canonicalize_name(n) for n in project["tool"]["hpo-operator"]["cli-only-dependencies"]}
    operator = [r for r in runtime if canonicalize_name(r.name) not in cli_only]
    check_pinned(operator, image, IMAGE_LOCK, "pyproject.toml", problems)
    for name in sorted(cli_only & set(image)):
        problems.append(f"{IMAGE_LOCK} pins {name}, which only the kubectl plugin uses")
    for name, pin in sorted(image.items()):
        if name not in dev:
            continue
        if dev[name].version != pin.version:
            problems.append(
                f"{IMAGE_LOCK} pins {name}=={pin.version}, {DEV_LOCK} {name}=={dev[name].version} (make lock)"
            )
        elif pin.hashes and dev[name].hashes and set(pin.hashes) != set(dev[name].hashes):
            # The same version with other files: not what the tests ran. (A pin without any hash is
            # reported above, in either lock.)
            problems.append(f"{IMAGE_LOCK} pins {name}=={pin.version} with hashes other than {DEV_LOCK}'s (make lock)")
    wanted = closure({canonicalize_name(r.name) for r in operator}, dev)
    for name in sorted(set(image) - wanted):
        problems.append(f"{IMAGE_LOCK} pins {name}, which the operator does not need by {DEV_LOCK} (make lock)")
    for name in sorted(wanted - set(image)):
        problems.append(f"{IMAGE_LOCK} lacks {name}, which the operator needs by {DEV_LOCK} (make lock)")

    # The gp flavour's lock: its extra pinned, hashed, and nothing the image's lock pins already.
    gp_reqs = requirements(extras.get(GP_EXTRA, []), f"pyproject.toml [{GP_EXTRA}]", problems)
    if gp_reqs or (repo / GP_LOCK).exists():
        if not (repo / GP_LOCK).exists():
            problems.append(f"{GP_LOCK} is missing: pyproject.toml has a {GP_EXTRA} extra (make lock)")
            return problems
        gp = read_hashed_lock(repo / GP_LOCK, GP_LOCK, "the gp flavour of both image recipes", problems)
        check_pinned(gp_reqs, gp, GP_LOCK, f"pyproject.toml [{GP_EXTRA}]", problems)
        for name in sorted(set(gp) & set(image)):
            problems.append(f"{GP_LOCK} pins {name}, which {IMAGE_LOCK} pins already (make lock)")
    return problems


def main(argv: list[str]) -> int:
    repo = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems = check(repo)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"the locks disagree with pyproject.toml or with each other: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("locks: requirements-dev.txt and the image's (with its gp flavour's) agree with pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
