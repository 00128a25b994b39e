"""``segpipe``: one subcommand per pipeline stage. Each takes ``-c/--config FILE`` (repeatable; later
files overlay earlier ones) and trailing dotted overrides ``section.key=value``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import PipelineConfig, load_config, with_base_config
from pipeline.errors import ConfigError, SegPipeError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Medical volumetric segmentation pipeline."
)

ConfigOption = Annotated[
    Optional[list[Path]],  # noqa: UP045 - typer needs Optional here
    typer.Option("-c", "--config", help="YAML config file(s); default configs/params.yaml"),
]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(help="overrides: section.key=value ...")]  # noqa: UP045


def _fail(message: str, code: int) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def stage(func: Callable) -> Callable:
    """Turn project errors into a clear message on stderr and a non-zero exit code (2 for config errors)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(f"error: {exc}", 2)
        except SegPipeError as exc:
            _fail(f"error: {exc}", 1)

    return wrapper


def _load(config: list[Path] | None, overrides: list[str] | None, uses_torch: bool = True) -> PipelineConfig:
    """The validated config; for a stage that computes with torch, its thread count pinned (``base.torch_threads``).
    Stages without torch (``uses_torch=False``) do not import it, which saves a second or two per stage."""
    bad = [o for o in overrides or [] if "=" not in o]
    if bad:
        raise ConfigError(f"unexpected argument(s) {bad}: overrides take the form section.key=value")
    cfg = load_config(config, overrides)
    if uses_torch:
        from pipeline.runtime import pin_torch_threads

        pin_torch_threads(cfg.base.torch_threads)
    return cfg


@app.command()
@stage
def synth(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Generate the phantom dataset (CT abdomen, or MR brain with synth.modality=MR) into synth.out_dir."""
    from pipeline.data.mr_phantom import generate_mr_dataset
    from pipeline.data.phantom import generate_phantom_dataset

    cfg = _load(config, overrides, uses_torch=False)
    generate = generate_mr_dataset if cfg.synth.modality == "MR" else generate_phantom_dataset
    path = generate(cfg.synth, cfg.base.num_workers)
    typer.echo(f"wrote {path}")


@app.command()
@stage
def scenes(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Generate the natural-scenes dataset (Pascal VOC layout) into scenes.out_dir."""
    from pipeline.data.scenes import generate_scenes

    cfg = _load(config, overrides, uses_torch=False)
    root = generate_scenes(cfg.scenes)
    typer.echo(f"wrote {cfg.scenes.n_train} training and {cfg.scenes.n_val} validation scenes to {root}")


@app.command("prepare-natural")
@stage
def prepare_natural(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Turn a Pascal VOC-layout folder (natural.root) into arrays the training engine reads (natural.out_dir)."""
    from pipeline.preprocess.natural import prepare_natural as prepare

    cfg = _load(config, overrides)
    typer.echo(f"wrote {prepare(cfg)}")


@app.command()
@stage
def verify(
    args: Annotated[Optional[list[str]], typer.Argument(help="[DATASET_DIR] then overrides key=value")] = None,  # noqa: UP045
    config: ConfigOption = None,
) -> None:
    """Check every file of a dataset (default data.root); report all problems; exit 1 on errors."""
    from pipeline.data.verify import verify_dataset, write_report

    positional = [a for a in args or [] if "=" not in a]
    if len(positional) > 1:
        raise ConfigError(f"expected at most one DATASET_DIR, got {positional}")
    cfg = _load(config, [a for a in args or [] if "=" in a], uses_torch=False)
    root = Path(positional[0]) if positional else cfg.data.root
    report = verify_dataset(root, cfg.verify, cfg.base.num_workers, cfg.checks)
    for problem in report.problems:
        typer.echo(problem.line(), err=problem.severity == "error")
    write_report(report, cfg.verify.report)
    typer.echo(
        f"verified {len(report.cases)} case(s) in {root}: {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s); report {cfg.verify.report}"
    )
    if report.errors:
        raise typer.Exit(1)


@app.command()
@stage
def plan(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Fingerprint data.root and plan spacing, normalisation, patch, batch, topology and steps into plan.file."""
    from pipeline.planning.run import describe_plans, plan_dataset

    cfg = _load(config, overrides)
    plans = plan_dataset(cfg)
    typer.echo(describe_plans(plans))
    typer.echo(f"wrote {cfg.plan.file}")


@app.command()
@stage
def preprocess(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Reorient, crop, normalise and resample every case of data.root into preprocess.out_dir."""
    from pipeline.preprocess.run import preprocess_dataset

    cfg = _load(config, overrides, uses_torch=False)
    path = preprocess_dataset(cfg)
    typer.echo(f"wrote {path}")


@app.command()
@stage
def train(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    stage_name: Annotated[str, typer.Option("--stage", help="DVC stage name recorded in MLflow")] = "train",
) -> None:
    """Train the configured model (e.g. -c configs/unet2d.yaml) on preprocess.out_dir; works under torchrun."""
    from pipeline.planning.resolve import with_fold_folders
    from pipeline.training.engine import train_model

    cfg = _load(with_base_config(config), overrides)
    if cfg.model.name == "autoencoder":
        raise ConfigError("model.name=autoencoder is trained by `segpipe pretrain`, not `segpipe train`")
    if cfg.train.init_from:
        typer.echo(f"initialising the encoder from {cfg.train.init_from} (strict={cfg.train.init_strict})")
    metrics = train_model(cfg, stage_name)
    if metrics:
        dice = {k: round(v, 4) for k, v in metrics.items() if k.endswith("dice_mean")}
        typer.echo(f"trained {cfg.model.name} for {metrics['epochs']} epoch(s) in {metrics['train_minutes']} min; {dice}")
        t = with_fold_folders(cfg).train  # the folders train_model wrote to
        typer.echo(f"wrote {Path(t.out_dir) / 'model.pt'} and {Path(t.reports_dir) / 'metrics.json'}")


@app.command()
@stage
def pretrain(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    stage_name: Annotated[str, typer.Option("--stage", help="DVC stage name recorded in MLflow")] = "pretrain",
) -> None:
    """Pretrain an autoencoder (e.g. -c configs/pretrain_vnet3d.yaml) on unlabeled scans; writes encoder.pt."""
    from pipeline.training.engine import train_model

    cfg = _load(with_base_config(config), overrides)
    if cfg.model.name != "autoencoder":
        raise ConfigError(f"segpipe pretrain needs model.name=autoencoder, got '{cfg.model.name}' (use segpipe train)")
    metrics = train_model(cfg, stage_name)
    if metrics:
        typer.echo(
            f"pretrained {metrics['model']} on {metrics['pretraining_cases']} scan(s) for {metrics['epochs']} epoch(s) in "
            f"{metrics['train_minutes']} min; val reconstruction MSE {metrics['val_reconstruction_mse']:.4f}"
        )
        typer.echo(f"wrote {Path(cfg.train.out_dir) / 'encoder.pt'}")


@app.command()
@stage
def crossval(
    models: Annotated[list[Path], typer.Argument(help="configuration folders holding fold_<k>/ models")],
    config: ConfigOption = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override section.key=value")] = None,  # noqa: UP045
) -> None:
    """Score out-of-fold predictions of each configuration and their ensembles; write crossval.decisions."""
    from pipeline.crossval.run import crossvalidate

    cfg = _load(config, overrides)
    decisions = crossvalidate(cfg, tuple(models))
    for name, scores in decisions.scores.items():
        typer.echo(f"  {name:28s} out-of-fold Dice {scores['dice_mean']:.4f}")
    typer.echo(
        f"chose {'+'.join(decisions.configurations)} with postprocessing {decisions.postprocessing} "
        f"({decisions.cases} out-of-fold case(s), folds {list(decisions.folds)}); wrote {cfg.crossval.decisions}"
    )


OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="replace outputs that already exist (refused otherwise)")]


@app.command()
@stage
def infer(config: ConfigOption = None, overrides: OverridesArg = None, overwrite: OverwriteOption = False) -> None:
    """Segment the dataset's test scans with infer.models into infer.out_dir, on each scan's own grid."""
    from pipeline.inference.run import infer_dataset

    cfg = _load(config, overrides)
    summary = infer_dataset(cfg, overwrite)
    seconds = summary.seconds_per_case
    typer.echo(f"predicted {len(seconds)} scan(s) in {sum(seconds.values()):.1f} s; wrote {summary.path.parent}")


@app.command()
@stage
def evaluate(
    config: ConfigOption = None,
    overrides: OverridesArg = None,
    stage_name: Annotated[str, typer.Option("--stage", help="DVC stage name recorded in MLflow")] = "evaluate",
) -> None:
    """Score infer.out_dir against the test ground truth (Dice, IoU, HD95, NSD) and write the QC report; without test
    ground truth, report cross-validation's out-of-fold scores."""
    from pipeline.evaluation.run import evaluate_dataset

    cfg = _load(config, overrides)
    metrics = evaluate_dataset(cfg, stage_name)
    summary = {k: round(v, 4) for k, v in metrics.items() if k.endswith("_mean")}
    scored = f"{metrics['cases']} test case(s)"
    if not metrics["cases"]:
        scored = f"no test ground truth; out of fold, {metrics['oof_cases']} case(s)"
    typer.echo(f"evaluated {scored}: {summary}; wrote {cfg.evaluate.reports_dir}")


@app.command()
@stage
def export(config: ConfigOption = None, overrides: OverridesArg = None, overwrite: OverwriteOption = False) -> None:
    """Write the predicted test masks as NIfTI, 3D Slicer .seg.nrrd, colour table and ITK-SNAP labels."""
    from pipeline.export.run import export_dataset

    cfg = _load(config, overrides)
    path = export_dataset(cfg, overwrite)
    typer.echo(f"exported {len(json.loads(path.read_text())['cases'])} case(s); wrote {path.parent}")


@app.command()
@stage
def predict(
    input_path: Annotated[Path, typer.Argument(help="a NIfTI file, a folder of NIfTI files, or a DICOM series folder")],
    output_dir: Annotated[Path, typer.Argument(help="folder for the masks (one sub-folder per scan)")],
    model: Annotated[
        Optional[list[Path]], typer.Option("--model", "-m", help="model folder (repeat to ensemble); default infer.models")  # noqa: UP045
    ] = None,
    naming: Annotated[str, typer.Option(help="anonymous: scan-<digest>; source: the input file or folder name")] = "anonymous",
    series_uid: Annotated[Optional[str], typer.Option(help="SeriesInstanceUID when a folder holds several")] = None,  # noqa: UP045
    overwrite: OverwriteOption = False,
    force: Annotated[bool, typer.Option("--force", help="segment scans the input gate refuses (qa.json records it)")] = False,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Segment scans outside DVC and export them for 3D Slicer, ITK-SNAP and (DICOM input) OHIF via DICOM SEG."""
    from pipeline.inference.run import predict_path

    if naming not in ("anonymous", "source"):
        raise ConfigError(f"--naming must be anonymous or source, got {naming!r}")
    cfg = _load(config, [*(overrides or []), *([f"infer.models={[str(m) for m in model]}"] if model else []),
                         *(["infer.force=true"] if force else [])])  # fmt: skip
    written = predict_path(
        input_path, output_dir, cfg.infer, cfg.export.formats, naming, series_uid, overwrite, cfg.crossval.decisions, cfg.checks
    )
    for source, files in written.items():
        typer.echo(f"{source} -> {Path(files[0]).parent}")
    typer.echo(f"segmented {len(written)} scan(s) into {output_dir}")


def main() -> None:  # pragma: no cover - console entry
    """Entry point that also works as ``python -m pipeline``."""
    app(prog_name="segpipe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
