"""The documentation: README.md (the front door) and the site built from docs/ (mkdocs.yml).

The site builds with --strict, so a link to a missing page or anchor fails here, in `make test`.
Every YAML and shell block that README.md or a page shows is either checked below or marked
illustrative in its fence (```sh title="illustrative"), so a reader can tell what was tested:
- YAML: an Experiment or Trial is validated by the API's models (what `kubectl apply` and the
  operator hold it to); a fragment of an Experiment's spec (`budget:`, `trialTemplate:`, ...) is
  validated inside a whole spec; a Katib Experiment is converted (tests/unit/test_convert_katib.py
  also checks that the page shows the converter's exact output).
- Shell: `make` names Makefile targets; `kubectl hpo` parses with the plugin's own options;
  `kubectl get|describe|explain|delete` name the CRDs' resources (names, short names, category);
  `kubectl apply|create -f` and `hack/*.sh` name files of this repository (a script, its
  subcommand); a console block's commands are its `$ ` lines, the rest is output.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from hpo_operator.api.spec import ExperimentSpec, TrialSpec
from hpo_operator.cli.main import app
from hpo_operator.client import convert_katib

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ILLUSTRATIVE = 'title="illustrative"'
CHECKED_LANGUAGES = {"yaml", "sh", "console"}


def blocks(page: Path) -> list[tuple[str, str, str, int]]:
    """(language, info after it, body, line) of each fenced block of a page."""
    text = page.read_text()
    return [(m[1], m[2].strip(), m[3], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shown_blocks() -> list[tuple[str, str, str]]:
    """(where, language, body) of every YAML and shell block shown and not marked illustrative."""
    return [
        (f"{page.relative_to(REPO)}:{line}", lang, body)
        for page in PAGES
        for lang, info, body, line in blocks(page)
        if lang in CHECKED_LANGUAGES and ILLUSTRATIVE not in info
    ]


# --- the site ------------------------------------------------------------------------------------


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )


def test_the_site_builds_with_strict_links_and_shows_the_screenshots(tmp_path: Path):
    done = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
    assert (tmp_path / "site" / "dashboard.png").is_file()
    assert 'src="../dashboard.png"' in (tmp_path / "site" / "dashboard" / "index.html").read_text()
    # bench/README.md is included, not copied: its first table is on the benchmarks page.
    assert "tuning_quality.py" in (tmp_path / "site" / "benchmarks" / "index.html").read_text()


def test_a_link_to_a_missing_anchor_fails_the_build(tmp_path: Path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy)
    (copy / "bench").mkdir()
    shutil.copy(REPO / "bench" / "README.md", copy / "bench")
    with (copy / "docs" / "budgets.md").open("a") as f:
        f.write("\nSee [the rules](recovery.md#no-such-section).\n")
    done = build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "does not contain an anchor '#no-such-section'" in done.stderr


def test_every_page_is_in_the_sites_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {p for p in pages if f": {p}" not in nav} == set()


# --- README: the front door ----------------------------------------------------------------------


def test_the_readme_is_a_short_front_door_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    setup = readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    [(lang, _, body, _)] = [b for b in blocks(REPO / "README.md") if b[2] in setup]
    commands = [line.split("#", 1)[0].strip() for line in body.splitlines()]
    assert commands == ["make demo", "make test"]
    # .ci/run runs README's test command after the static checks.
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("\nmake test")


def test_the_readme_links_to_every_page_of_the_site():
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"index.md", "benchmarks.md"}
    assert pages - linked == set()
    assert "](bench/README.md)" in readme


# --- YAML blocks ---------------------------------------------------------------------------------

SPEC_FIELDS = {f.alias or name for name, f in ExperimentSpec.model_fields.items()}


def base_spec() -> dict:
    """The README's example, which a fragment is validated inside."""
    [example] = [b for lang, _, b, _ in blocks(REPO / "README.md") if lang == "yaml" and "kind: Experiment" in b]
    return yaml.safe_load(example)["spec"]


CHART_VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "hpo-operator" / "values.yaml").read_text())


def values_problem(shown: dict, defaults: dict, path: str) -> str | None:
    """A chart value the chart does not have, or of another type than its default."""
    for key, value in shown.items():
        where = f"{path}{key}"
        if key not in defaults:
            return f"the chart has no value {where}"
        default = defaults[key]
        if isinstance(default, dict) and isinstance(value, dict):
            if default and (problem := values_problem(value, default, f"{where}.")):
                return problem
        elif default is not None and type(value) is not type(default):
            return f"{where} is a {type(default).__name__} in the chart's values, not a {type(value).__name__}"
    return None


def yaml_problem(body: str) -> str | None:
    """Why a YAML block does not hold, or None."""
    try:
        docs = [d for d in yaml.safe_load_all(body) if d is not None]
    except yaml.YAMLError as e:
        return f"not YAML: {e}"
    if not docs:
        return "no document"
    for doc in docs:
        if not isinstance(doc, dict):
            return "not a mapping"
        try:
            if doc.get("apiVersion") == "hpo.dev/v1alpha1" and doc.get("kind") == "Experiment":
                ExperimentSpec.model_validate(doc["spec"])
            elif doc.get("apiVersion") == "hpo.dev/v1alpha1" and doc.get("kind") == "Trial":
                TrialSpec.model_validate(doc["spec"])
            elif str(doc.get("apiVersion", "")).startswith("kubeflow.org/") and doc.get("kind") == "Experiment":
                convert_katib([doc])
            elif set(doc) <= SPEC_FIELDS:
                ExperimentSpec.model_validate({**base_spec(), **doc})
            elif set(doc) <= set(CHART_VALUES):
                if problem := values_problem(doc, CHART_VALUES, ""):
                    return problem
            else:
                return f"not an Experiment, a Trial, a Katib Experiment, a spec fragment or chart values: {sorted(doc)}"
        except Exception as e:  # the models' and the converter's errors alike
            return f"{type(e).__name__}: {e}"
    return None


# --- shell blocks --------------------------------------------------------------------------------

MAKE_TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", (REPO / "Makefile").read_text(), re.MULTILINE))


def crd_names() -> set[str]:
    names = set()
    for path in (REPO / "crds").glob("*.yaml"):
        n = yaml.safe_load(path.read_text())["spec"]["names"]
        names |= {n["plural"], n["singular"], *n.get("shortNames", []), *n.get("categories", [])}
    return names


KUBECTL_VALUE_FLAGS = {"-n", "--namespace", "-o", "--output", "-l", "--selector", "-f", "--filename"}


def kubectl_hpo_problem(args: list[str]) -> str | None:
    """Parses `kubectl hpo ARGS` as the plugin would, running nothing. (typer brings its own copy
    of click: its groups and errors are told by what they offer.)"""
    command = typer.main.get_command(app)
    try:
        while hasattr(command, "resolve_command"):
            ctx = command.make_context("kubectl hpo", list(args))
            _, sub, args = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
            if sub is None:
                return "no such command"
            command = sub
        command.make_context("kubectl hpo", list(args))
    except Exception as e:
        if not hasattr(e, "format_message"):
            raise
        return str(e.format_message())
    return None


def command_problem(words: list[str]) -> str | None:
    """Why one command of a shell block is not checked, or None."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]  # an environment variable for the command
    if not words:
        return "no command"
    match words:
        case ["make", *targets]:
            unknown = [t for t in targets if "=" not in t and t not in MAKE_TARGETS]
            return f"no make target {unknown}" if unknown or not targets else None
        case ["kubectl", "hpo", *args]:
            return kubectl_hpo_problem(args)
        case ["kubectl", ("get" | "describe" | "explain" | "delete"), *rest]:
            plain = [w for i, w in enumerate(rest) if not w.startswith("-") and rest[i - 1] not in KUBECTL_VALUE_FLAGS]
            if not plain:
                return "no resource"
            kinds = set(plain[0].split(".")[0].split(","))
            return None if kinds <= crd_names() else f"not this project's resources: {plain[0]}"
        case ["kubectl", ("apply" | "create"), *rest] if "-f" in rest:
            path = rest[rest.index("-f") + 1]
            return None if (REPO / path).is_file() else f"no file {path}"
        case [script, *args] if script.startswith("hack/"):
            if not (REPO / script).is_file():
                return f"no script {script}"
            text = (REPO / script).read_text()
            return None if all(f"{a})" in text for a in args) else f"{script} has no subcommand {args}"
    return f"not checked: {shlex.join(words)}"


def shell_problem(lang: str, body: str) -> str | None:
    text = body.replace("\\\n", " ")
    lines = text.splitlines()
    if lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
        if not lines:
            return "a console block without a command"
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            return f"{line!r}: {e}"
        command: list[str] = []
        for w in [*words, "&&"]:
            if w != "&&":
                command.append(w)
            elif command:
                if problem := command_problem(command):
                    return f"{shlex.join(command)}: {problem}"
                command = []
    return None


def block_problem(lang: str, body: str) -> str | None:
    return yaml_problem(body) if lang == "yaml" else shell_problem(lang, body)


@pytest.mark.parametrize("where, lang, body", [pytest.param(*b, id=b[0]) for b in shown_blocks()])
def test_each_yaml_and_shell_block_holds_unless_marked_illustrative(where: str, lang: str, body: str):
    assert block_problem(lang, body) is None, f"{where}: mark it ```{lang} {ILLUSTRATIVE} if it is not checkable"


def test_the_checks_refuse_what_does_not_hold():
    # Each kind of check, on a block that breaks it: the checks can fail.
    assert "budget" in yaml_problem("budget: {runningTrials: Sometimes}")
    assert yaml_problem("objective: {type: maximize}\nmaxTrialCount: -1")
    assert yaml_problem("apiVersion: hpo.dev/v1alpha1\nkind: Experiment\nspec: {parallelTrialCount: 2}")
    assert "a spec fragment" in yaml_problem("image: registry.example/x:1\nobjective: {}")
    assert "no value dashboard.auth.proxy.userHeadr" in yaml_problem("dashboard: {auth: {proxy: {userHeadr: X-User}}}")
    assert "not a str" in yaml_problem("trialKinds: jobs")
    assert "no make target" in shell_problem("sh", "make demo && make tests")
    assert shell_problem("sh", "kubectl hpo extend mnist --trails 20")
    assert shell_problem("sh", "kubectl hpo no-such-command")
    assert "not this project's" in shell_problem("sh", "kubectl get pods -n ml")
    assert "no file" in shell_problem("console", "$ kubectl apply -f examples/nothing.yaml\noutput")
    assert "subcommand" in shell_problem("sh", "hack/real-node.sh sideways")
    assert "not checked" in shell_problem("sh", "curl localhost:8080")
    assert shell_problem("sh", "kubectl hpo extend mnist --trials 20  # a comment") is None
