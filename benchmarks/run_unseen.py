"""Run the planned defaults on a generated dataset they were not tuned on, as a new user would (issue 11's check).

Makes a fresh project from this checkout's tracked files (a new git repository, no DVC cache), writes dataset KIND of
``make_unseen_datasets.py`` beside it, points ``data.root`` at it (the only key changed) and runs
``dvc repro evaluate export``. Prints, and writes to ``<work>/<KIND>_summary.json``, what the figures in
``benchmarks/RESULTS.md`` quote: the plan's configurations, the out-of-fold scores and choice, the test metrics and
each training stage's epochs and minutes. Then ``bench_unseen.py --project <work>/project_<KIND>`` puts the MONAI recipe
beside it.

Usage: python benchmarks/run_unseen.py KIND [--work /tmp/segpipe_unseen] [--seed 0]
       python benchmarks/run_unseen.py --data-root DIR [--work ...]   (a dataset made elsewhere, e.g. the brain MR
       phantom: ``segpipe synth synth.modality=MR synth.out_dir=DIR``; its folder name names the run)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_unseen_datasets import KINDS, make_dataset  # noqa: E402


def fresh_project(folder: Path, data_root: Path) -> None:
    """Copy the checkout's tracked files (and DVC's config, not its cache) into a new git repository at ``folder``
    whose ``data.root`` is ``data_root``."""
    shutil.rmtree(folder, ignore_errors=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (t.decode() for t in tracked)):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    params = folder / "configs" / "params.yaml"
    text, count = re.subn(r"(?m)^  root: data/phantom\b.*$", f"  root: {data_root}", params.read_text())
    if count != 1:
        raise SystemExit(f"{params}: no 'data.root: data/phantom' line to point at {data_root}")
    params.write_text(text)
    git = ["git", "-c", "user.email=unseen@segpipe", "-c", "user.name=run_unseen"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", f"fresh project on {data_root}"]):
        subprocess.run(command, cwd=folder, check=True, capture_output=True)


def train_minutes(metrics_path: Path) -> float:
    """A training stage's minutes, from the ``timings.json`` beside its ``metrics.json`` (the clock's figures left the
    DVC outputs on 2026-12-07), or from ``metrics.json`` in a project made before that."""
    timings = metrics_path.with_name("timings.json")
    return json.loads((timings if timings.is_file() else metrics_path).read_text())["train_minutes"]


def summary(project: Path, minutes: float) -> dict:
    """The figures of a finished run: plan, cross-validation, test metrics, training minutes."""
    plans = json.loads((project / "reports/plan/plans.json").read_text())
    decisions = json.loads((project / "reports/crossval/decisions.json").read_text())
    stages = sorted([*project.glob("reports/pretrain_*/metrics.json"), *project.glob("reports/train_*/fold_*/metrics.json")])
    return {
        "configurations": {
            name: {key: config.get(key) for key in ("spacing", "patch_size", "batch_size")}
            for name, config in plans["configurations"].items()
        },
        "normalisation": plans["normalisation"],
        "out_of_fold": {name: score["dice_mean"] for name, score in decisions["scores"].items()},
        "out_of_fold_cases": decisions["cases"],
        "chosen": decisions["models"],
        "postprocessing": decisions["postprocessing"],
        "test": json.loads((project / "reports/evaluate/metrics.json").read_text()),
        "training": {
            str(path.parent.relative_to(project / "reports")): {
                "epochs": json.loads(path.read_text())["epochs"],
                "train_minutes": train_minutes(path),
            }
            for path in stages
        },
        "dvc_repro_minutes": round(minutes, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=sorted(KINDS))
    parser.add_argument("--data-root", type=Path, help="an existing dataset folder instead of a generated KIND")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segpipe_unseen"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.kind is None) == (args.data_root is None):
        parser.error("give either KIND or --data-root")
    name = args.kind or args.data_root.name
    data_root, project = args.data_root or args.work / name, args.work / f"project_{name}"
    if args.kind and not (data_root / "dataset.json").exists():
        make_dataset(data_root, args.kind, args.seed)
    fresh_project(project, data_root.resolve())
    start = time.monotonic()
    # dvc and the stages' `segpipe` commands from this interpreter's environment, activated or not
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": str(project), "PATH": path}
    with open(project / "repro.log", "w") as log:
        done = subprocess.run(["dvc", "repro", "evaluate", "export"], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"dvc repro failed on {name}: see {project / 'repro.log'}")
    result = summary(project, (time.monotonic() - start) / 60)
    (args.work / f"{name}_summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
