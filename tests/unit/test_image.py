"""The operator's image has two recipes, the Dockerfile (for Docker users) and hack/image.sh (built
here without Docker). They must make the same image: the same Debian suite and Python package, the
same pinned wheels, the same place, user and entry point. And the pins must satisfy pyproject.toml."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
SCRIPT = (REPO / "hack" / "image.sh").read_text()
LOCK = REPO / "deploy" / "image" / "requirements.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def script_var(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT, re.M)
    assert match, f"hack/image.sh sets no {name}"
    return match.group(1)


def final_stage() -> str:
    return DOCKERFILE.split("\nFROM ")[-1]


def pins() -> dict[str, str]:
    """name: version, from the pins' lines (each followed by its indented --hash lines)."""
    result = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith(("#", " ")):
            name, _, version = line.removesuffix(" \\").partition("==")
            assert version, f"not an exact pin: {line}"
            result[canonicalize_name(name)] = version
    return result


def lock_installs(recipe: str) -> list[str]:
    """The recipe's pip install commands that install the lock (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", recipe)
    lock = re.compile(r'-r (deploy/image/requirements\.txt|"\$lock")(\s|$)')
    return [line for line in joined.splitlines() if "pip install" in line and lock.search(line)]


def test_both_recipes_use_the_same_debian_suite_and_python_package():
    suites = set(re.findall(r"^FROM debian:(\w+)-slim", DOCKERFILE, re.M))
    assert suites == {script_var("suite")}
    installed = re.search(r"apt-get install -y --no-install-recommends ([^\\&\n]+)", final_stage()).group(1).split()
    assert installed == script_var("debian_packages").split(",")


def test_both_recipes_install_the_lock_into_the_same_place_as_the_same_user():
    assert "deploy/image/requirements.txt" in DOCKERFILE and script_var("lock").endswith(
        "deploy/image/requirements.txt"
    )
    site = script_var("site")
    assert f"COPY --from=wheels /site /{site}" in final_stage()
    assert f"--invalidation-mode unchecked-hash /{site}" in final_stage()
    assert re.search(r"^USER (\S+)$", final_stage(), re.M).group(1) == script_var("user") == "65532:65532"
    for recipe in (DOCKERFILE, SCRIPT):
        assert recipe.count("--no-deps") >= 2, "the lock alone decides the packages"
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", final_stage(), re.M).group(1)
    assert ast.literal_eval(entry) == ["python3", "-m", "hpo_operator"]
    assert "--config.entrypoint python3 --config.entrypoint -m --config.entrypoint hpo_operator" in SCRIPT


def test_both_recipes_install_the_lock_requiring_its_hashes():
    """pip checks every wheel against its pin's hashes: a file changed on the index, or a version
    the lock does not name, stops the build."""
    for recipe, where in ((DOCKERFILE, "Dockerfile"), (SCRIPT, "hack/image.sh")):
        installs = [c for c in lock_installs(recipe) if "--dry-run" not in c]
        assert installs, f"{where} does not install the lock"
        for command in installs:
            assert "--require-hashes" in command and "--only-binary=:all:" in command, f"{where}: {command}"
    assert "--hash=sha256:" in LOCK.read_text()


def test_the_lock_satisfies_the_operators_dependencies_and_leaves_the_plugins_out():
    locked = pins()
    cli_only = {canonicalize_name(n) for n in PYPROJECT["tool"]["hpo-operator"]["cli-only-dependencies"]}
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in cli_only:
            assert name not in locked, f"{name} is the kubectl plugin's only, yet in the image"
        else:
            assert name in locked, f"{name} is not pinned in {LOCK.name}"
            assert req.specifier.contains(locked[name], prereleases=True), f"{name}=={locked[name]} vs {spec}"


def test_the_operators_modules_never_import_the_plugins_dependencies():
    """What the image leaves out must not be imported by anything but the kubectl plugin."""
    cli_only = set(PYPROJECT["tool"]["hpo-operator"]["cli-only-dependencies"])
    package = REPO / "operator" / "hpo_operator"
    plugin = {*(package / "cli").rglob("*.py"), *(package / "client").rglob("*.py")}
    offenders = []
    for path in sorted(set(package.rglob("*.py")) - plugin):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [f"{path.relative_to(package)}: {n}" for n in names if n.split(".")[0] in cli_only]
    assert not offenders


def test_the_dashboard_runs_without_the_plugins_dependencies():
    """The chart runs the dashboard from this image (python3 -m hpo_operator.dashboard): it must
    import and build its app with the plugin's packages missing, as they are in the image. (The
    test above reads import statements; this one follows the imports, as Python does.)"""
    import subprocess
    import sys

    cli_only = PYPROJECT["tool"]["hpo-operator"]["cli-only-dependencies"]
    script = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {cli_only!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the image)")
sys.meta_path.insert(0, Missing())
from hpo_operator.dashboard import __main__, server
from hpo_operator.dashboard.cluster import Store
app = server.create_app(Store(connection=None, namespaces=None), server.Options(allowed_hosts=["*"]))
assert app.routes
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_both_recipes_add_the_gp_lock_for_the_gp_flavour_only_requiring_its_hashes():
    """FLAVOUR=gp (hack/image.sh) and --build-arg FLAVOUR=gp (Dockerfile) install PyTorch's hashed
    lock after the image's own; the default image never does."""
    joined = {
        where: re.sub(r"\\\n\s*", " ", recipe) for where, recipe in (("Dockerfile", DOCKERFILE), ("script", SCRIPT))
    }
    for where, recipe in joined.items():
        gp = [
            line
            for line in recipe.splitlines()
            if "pip install" in line and "requirements-gp" in line or ("pip install" in line and '"$gp_lock"' in line)
        ]
        assert len(gp) == 1, f"{where}: {gp}"
        assert "--require-hashes" in gp[0] and "--no-deps" in gp[0] and "--only-binary=:all:" in gp[0]
        assert re.search(r'"\$FLAVOUR" = gp|"\$flavour" = gp', recipe), where
    assert script_var("gp_lock").endswith("deploy/image/requirements-gp.txt")
