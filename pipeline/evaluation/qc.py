"""Visual QC: per case, three orthogonal planes through each organ's centre, and an HTML page of all cases.

Overlays compare prediction with ground truth per organ: true positives green, false positives
red, false negatives blue (without ground truth the prediction is drawn in the organ's colour).
Slices are reoriented to RAS and shown radiologically (patient right on screen left, superior up),
with the pixel aspect of the voxel spacing and an abdominal CT window.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.labels import LabelRegistry
from pipeline.evaluation.figures import new_figure, radiological
from pipeline.io_utils import atomic_path
from pipeline.preprocess.geometry import ras_spacing, reorient_to_ras

TP, FP, FN = (0.1, 0.85, 0.1), (0.95, 0.15, 0.1), (0.15, 0.35, 1.0)
CT_WINDOW_HU = (-160.0, 240.0)
PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))  # (name, array axis held fixed)


def save_case_qc(
    path: Path,
    image: np.ndarray,
    affine: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None,
    registry: LabelRegistry,
    title: str,
) -> None:
    """Write one PNG: a row per organ present, columns axial / coronal / sagittal through its centre.

    Args:
        path: output PNG.
        image: the scan (x, y, z) in scanner units, on its own grid.
        affine: the scan's RAS+ affine.
        prediction, truth: label maps on the same grid (``truth`` may be ``None``).
        registry: label names and colours.
        title: figure title.
    """
    image_ras = reorient_to_ras(image, affine)[0]
    pred_ras = reorient_to_ras(prediction, affine)[0]
    truth_ras = reorient_to_ras(truth, affine)[0] if truth is not None else None
    spacing = ras_spacing(affine)
    annotated = {lab.value for lab in registry.foreground() if truth_ras is not None and (truth_ras == lab.value).any()}
    organs = [lab for lab in registry.foreground() if lab.value in annotated or (pred_ras == lab.value).any()]
    plt, fig = new_figure(12, 3.6 * max(1, len(organs)))
    for row, label in enumerate(organs):
        centre = _largest_component_centre((truth_ras if label.value in annotated else pred_ras) == label.value)
        for column, (plane, axis) in enumerate(PLANES):
            ax = fig.add_subplot(len(organs), 3, row * 3 + column + 1)
            _draw_plane(ax, image_ras, pred_ras, truth_ras, label, axis, int(centre[axis]), spacing)
            ax.set_title(f"{label.name}: {plane} {centre[axis]}", fontsize=9)
    if not organs:
        fig.text(0.5, 0.5, "no organ predicted or annotated", ha="center")
    fig.suptitle(f"{title}   green TP / red FP / blue FN" if truth is not None else title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _largest_component_centre(mask: np.ndarray) -> np.ndarray:
    """Voxel centre of the largest connected part of ``mask`` (so a paired organ is cut through one of its halves)."""
    components, count = ndimage.label(mask)
    largest = int(np.bincount(components.ravel())[1:].argmax()) + 1 if count > 1 else 1
    return np.round(np.argwhere(components == largest).mean(axis=0)).astype(int)


def _draw_plane(ax, image, prediction, truth, label, axis: int, index: int, spacing) -> None:
    take = lambda volume: np.take(volume, index, axis=axis)  # noqa: E731
    rows_axis, columns_axis = [a for a in range(3) if a != axis][::-1]
    aspect = spacing[rows_axis] / spacing[columns_axis]
    ax.imshow(radiological(take(image)), cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=aspect)
    pred = take(prediction) == label.value
    rgba = np.zeros((*pred.shape, 4), dtype=np.float32)
    if truth is None:
        rgba[pred] = (*(c / 255 for c in label.color), 0.55)
    else:
        true = take(truth) == label.value
        for mask, colour in ((pred & true, TP), (pred & ~true, FP), (~pred & true, FN)):
            rgba[mask] = (*colour, 0.55)
    ax.imshow(radiological(rgba), aspect=aspect)
    ax.axis("off")


def write_html_report(path: Path, rows: list[dict], metric_names: tuple[str, ...], title: str) -> None:
    """Write a self-contained HTML page: one section per case, worst mean Dice first, with its metrics and overlay.

    Args:
        path: output HTML file (overlay paths in ``rows`` are relative to its folder).
        rows: ``{"case": id, "mean_dice": float, "metrics": {organ: {metric: value}}, "image": relative path}``.
        metric_names: the metric columns.
        title: page title.
    """
    ordered = sorted(rows, key=lambda r: r["mean_dice"])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>", f"<h1>{html.escape(title)}</h1>"]
    parts.append("<p>Cases sorted by mean Dice, worst first. Overlays: green TP, red FP, blue FN.</p>")
    for row in ordered:
        parts.append(f"<h2>{html.escape(row['case'])}: mean Dice {row['mean_dice']:.3f}</h2>")
        header = "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
        body = "".join(
            f"<tr><td>{html.escape(organ)}</td>" + "".join(f"<td>{values[m]:.3f}</td>" for m in metric_names) + "</tr>"
            for organ, values in row["metrics"].items()
        )
        parts.append(f"<table border='1' cellpadding='3'><tr><th>organ</th>{header}</tr>{body}</table>")
        if row.get("image"):
            parts.append(f"<p><img src='{html.escape(row['image'])}' style='max-width:100%'></p>")
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
