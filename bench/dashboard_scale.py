"""The dashboard at scale: how long the page of a 10,000-trial experiment takes to become usable,
measured in the browser (Debian's headless Chromium, driven by Playwright).

It creates an Experiment and --trials Trials with realistic statuses (tests/support/dashboard_objects.py:
retries, OOMKilled, evicted and failed configurations, metric histories; about 2 writes per trial,
a few minutes for 10,000 on 2 cores), starts `kubectl hpo dashboard` on them, waits until the
server has listed them, then opens the experiment page several times:

- cold:        the server's first view of the experiment (no rows, no study, no figure cached)
               and a fresh browser profile (plotly.js not cached either);
- warm server: the server's caches hot, a fresh browser profile;
- warm:        both hot (a reload in the same browser profile).

Every time is milliseconds from the start of navigation, as the page records them
(window.hpoTimings): `table` is when the summary and the first page of the trials table are drawn
and the table can be sorted and filtered ("usable"); each plot's time is when plotly.js finished
drawing it. `sort` is how long a click on a column header takes to sort all trials and redraw.
Prints a table; asserts nothing. The namespace is deleted at the end unless --keep. With --multi,
the experiment has two objectives and a constraint (its page adds the Pareto-front plot and a
second history).

    .venv/bin/python bench/dashboard_scale.py                          # 10,000 trials
    .venv/bin/python bench/dashboard_scale.py --trials 2000 --runs 2
    .venv/bin/python bench/dashboard_scale.py --namespace dash-10k --keep   # reuse it next time
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from hpo_operator.kube.client import TRIALS, ApiException, connect  # noqa: E402
from tests.support import dashboard_objects as objs  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
MARKS = ["table", "recovery", "history", "slice", "importance", "curves", "parallel"]
MULTI_MARKS = ["pareto", "history-1"]
EXPERIMENT = "scale"


async def create(namespace: str, total: int, writers: int, multi: bool = False) -> float:
    """Creates the namespace, the experiment and its trials (create, then status); seconds taken."""
    os.environ.setdefault("HPO_API_CONCURRENCY", str(writers))
    api = await connect()
    started = time.monotonic()
    try:
        try:
            await api._json(api.core.create_namespace, {"metadata": {"name": namespace}})
        except ApiException as e:
            if e.status != 409:
                raise
        exp, trials = objs.make(EXPERIMENT, total, total_trials=total, running=0, multi=multi)
        try:
            created = await api.create("experiments", namespace, objs._fresh(exp))
        except ApiException as e:
            if e.status != 409:
                raise
            created = await api.get("experiments", namespace, EXPERIMENT)
        await api.patch_status("experiments", namespace, EXPERIMENT, exp["status"])
        owner = objs.owner(created)
        existing = {t["metadata"]["name"] for t in (await api.list_raw(TRIALS, namespace))["items"]}
        done = 0

        async def one(trial: dict) -> None:
            nonlocal done
            name = trial["metadata"]["name"]
            if name not in existing:
                body = objs._fresh(trial)
                body["metadata"]["ownerReferences"] = [owner]
                for attempt in range(5):
                    try:
                        await api.create("trials", namespace, body)
                        break
                    except ApiException as e:
                        if e.status == 409:
                            break
                        if attempt == 4 or (e.status or 0) < 500:
                            raise
                        await asyncio.sleep(1 + attempt)
                await api.patch_status("trials", namespace, name, trial["status"])
            done += 1
            if done % 1000 == 0:
                print(f"  {done}/{len(trials)} trials ({time.monotonic() - started:.0f}s)", file=sys.stderr)

        # Created in order, in small batches, so that creation times follow the trials' order.
        batch = writers
        for i in range(0, len(trials), batch):
            await asyncio.gather(*(one(t) for t in trials[i : i + batch]))
    finally:
        await api.close()
    return time.monotonic() - started


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def start_dashboard(kubeconfig: str, namespace: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpo_operator.cli.main",
            "dashboard",
            "--port",
            "0",
            "--no-browser",
            "-n",
            namespace,
            "--kubeconfig",
            kubeconfig,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "http://" in line:
            return proc, line[line.index("http://") :].split()[0].rstrip("/")
    raise SystemExit("the dashboard did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(page, url: str, reload: bool = False, multi: bool = False) -> dict:
    if reload:
        page.reload()
    else:
        page.goto(url)
    marks = MARKS + MULTI_MARKS if multi else MARKS
    page.wait_for_function(f"() => {marks}.every(k => k in (window.hpoTimings || {{}}))", timeout=300_000)
    result = dict(page.evaluate("window.hpoTimings"))
    result["rows"] = page.evaluate("document.querySelectorAll('#trials tbody tr').length")
    result["count"] = page.text_content("#trial-count")
    column = "m:loss" if multi else "objective"  # several objectives: a column per metric
    result["sort"] = page.evaluate(f"""() => {{
        const t = performance.now();
        document.querySelector("#trials th[data-col='{column}']").click();
        return Math.round(performance.now() - t);
    }}""")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="loads per case (the cold case is one load)")
    parser.add_argument("--namespace", help="use (and fill if needed) this namespace; default: a new one")
    parser.add_argument("--keep", action="store_true", help="keep the namespace")
    parser.add_argument("--multi", action="store_true", help="two objectives and a constraint")
    parser.add_argument("--writers", type=int, default=24, help="writes in flight while creating the trials")
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("HPO_KUBECONFIG") or str(REPO / ".cluster" / "kubeconfig")
    )
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    os.environ["KUBECONFIG"] = args.kubeconfig
    namespace = args.namespace or f"hpo-dash-bench-{uuid.uuid4().hex[:6]}"
    print(f"creating {args.trials} trials in namespace {namespace} ...", file=sys.stderr)
    took = asyncio.run(create(namespace, args.trials, args.writers, args.multi))
    print(f"  created in {took:.0f}s", file=sys.stderr)
    proc, base = start_dashboard(args.kubeconfig, namespace)
    rows: list[tuple[str, dict]] = []
    try:
        started = time.monotonic()
        while not get(f"{base}/api/config")["synced"]:
            time.sleep(0.2)
        synced = time.monotonic() - started
        listed = get(f"{base}/api/experiments")["experiments"]
        assert listed and listed[0]["trials"] == args.trials, listed
        url = f"{base}/experiments/{namespace}/{EXPERIMENT}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

            def fresh_page():
                context = browser.new_context(viewport={"width": 1500, "height": 1000})
                return context, context.new_page()

            context, page = fresh_page()  # the browser's own start-up is not the page's
            page.goto("about:blank")
            context.close()
            context, page = fresh_page()
            rows.append(("cold", measure(page, url, multi=args.multi)))
            context.close()
            for _ in range(args.runs):
                context, page = fresh_page()
                rows.append(("warm server", measure(page, url, multi=args.multi)))
                rows.append(("warm", measure(page, url, reload=True, multi=args.multi)))
                context.close()
            browser.close()
        size = len(urllib.request.urlopen(f"{base}/api/experiments/{namespace}/{EXPERIMENT}/trials").read())
        memory = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if not args.keep:
            subprocess.run(
                [
                    str(Path(os.environ.get("HPO_CACHE", Path.home() / ".cache/hpo-operator")) / "bin/kubectl"),
                    "--kubeconfig",
                    args.kubeconfig,
                    "delete",
                    "namespace",
                    namespace,
                    "--wait=false",
                ],
                capture_output=True,
            )

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{args.trials} trials; server listed them in {synced:.1f}s after it started; "
        f"trials JSON {size / 1e6:.1f} MB; server RSS {memory:.0f} MB; "
        f"every trial in the table: {rows[0][1]['count']}, {rows[0][1]['rows']} rows drawn per page; "
        f"load average at the end {load} on {os.cpu_count()} CPUs\n"
    )
    marks = MARKS + MULTI_MARKS if args.multi else MARKS
    header = ["case", *marks, "sort"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in ("cold", "warm server", "warm"):
        runs = [r for c, r in rows if c == case]
        cells = [f"{statistics.median(r[m] for r in runs) / 1000:.2f} s" for m in marks]
        cells.append(f"{statistics.median(r['sort'] for r in runs)} ms")
        label = case + (f" (median of {len(runs)})" if len(runs) > 1 else "")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n(ms from the start of navigation; `table` = summary and trials table drawn, sortable and filterable)")


if __name__ == "__main__":
    main()
