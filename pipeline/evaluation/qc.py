"""Visual QC: per case, three orthogonal planes through each organ's centre, and an HTML page of all cases.

Overlays compare prediction with ground truth per organ: true positives green, false positives
red, false negatives blue (without ground truth the prediction is drawn in the organ's colour).
Slices are reoriented to RAS and shown radiologically (patient right on screen left, superior up),
with the pixel aspect of the voxel spacing and a display window from the modality (an abdominal window
for CT, the 1st-99th percentile for anything else). Beside it, the uncertainty overlay: the scan with the
predictive entropy as a heat map and the predicted organs' outlines.
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


def display_window(image: np.ndarray, is_ct: bool) -> tuple[float, float]:
    """The grey-value window of QC figures: an abdominal window in HU for CT, the 1st-99th percentile otherwise."""
    if is_ct:
        return CT_WINDOW_HU
    low, high = np.percentile(image[:: max(1, image.shape[0] // 64)], (1.0, 99.0))
    return float(low), float(high if high > low else low + 1.0)


def save_case_qc(
    path: Path,
    image: np.ndarray,
    affine: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None,
    registry: LabelRegistry,
    title: str,
    window: tuple[float, float] = CT_WINDOW_HU,
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
            _draw_plane(ax, image_ras, pred_ras, truth_ras, label, axis, int(centre[axis]), spacing, window)
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


def _draw_plane(ax, image, prediction, truth, label, axis: int, index: int, spacing, window) -> None:
    take = lambda volume: np.take(volume, index, axis=axis)  # noqa: E731
    rows_axis, columns_axis = [a for a in range(3) if a != axis][::-1]
    aspect = spacing[rows_axis] / spacing[columns_axis]
    ax.imshow(radiological(take(image)), cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
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
    """Write a self-contained HTML page: one section per case with its metrics and overlays.

    Cases are sorted by predicted risk (mean boundary entropy, highest first) when every row has one, as a reader
    without ground truth would triage them; otherwise by mean Dice, worst first.

    Args:
        path: output HTML file (overlay paths in ``rows`` are relative to its folder).
        rows: ``{"case": id, "mean_dice": float, "metrics": {organ: {metric: value}}, "image": relative path,
            optional "risk": float and "uncertainty_image": relative path}``.
        metric_names: the metric columns.
        title: page title.
    """
    by_risk = bool(rows) and all(r.get("risk") is not None for r in rows)
    ordered = sorted(rows, key=lambda r: -r["risk"]) if by_risk else sorted(rows, key=lambda r: r["mean_dice"])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>", f"<h1>{html.escape(title)}</h1>"]
    order = "predicted risk (mean boundary entropy of the organs), highest first" if by_risk else "mean Dice, worst first"
    parts.append(f"<p>Cases sorted by {order}. Overlays: green TP, red FP, blue FN; uncertainty: entropy heat map.</p>")
    for row in ordered:
        risk = f", predicted risk {row['risk']:.3f}" if by_risk else ""
        parts.append(f"<h2>{html.escape(row['case'])}: mean Dice {row['mean_dice']:.3f}{risk}</h2>")
        header = "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
        body = "".join(
            f"<tr><td>{html.escape(organ)}</td>" + "".join(f"<td>{values[m]:.3f}</td>" for m in metric_names) + "</tr>"
            for organ, values in row["metrics"].items()
        )
        parts.append(f"<table border='1' cellpadding='3'><tr><th>organ</th>{header}</tr>{body}</table>")
        for key in ("image", "uncertainty_image"):
            if row.get(key):
                parts.append(f"<p><img src='{html.escape(row[key])}' style='max-width:100%'></p>")
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("\n".join(parts) + "\n")


def save_uncertainty_overlay(
    path: Path,
    image: np.ndarray,
    affine: np.ndarray,
    prediction: np.ndarray,
    entropy_map: np.ndarray,
    registry: LabelRegistry,
    title: str,
    window: tuple[float, float] = CT_WINDOW_HU,
) -> None:
    """Write one PNG: the axial, coronal and sagittal planes through the predicted foreground's centre, with the
    predictive entropy as a heat map (transparent where certain) and each organ's outline in its colour."""
    image_ras, pred_ras = reorient_to_ras(image, affine)[0], reorient_to_ras(prediction, affine)[0]
    entropy_ras = reorient_to_ras(entropy_map, affine)[0]
    spacing = ras_spacing(affine)
    centre = _largest_component_centre(pred_ras > 0) if (pred_ras > 0).any() else np.asarray(pred_ras.shape) // 2
    top = float(np.log(max(registry.num_classes, 2)))
    plt, fig = new_figure(12, 4.2)
    for column, (plane, axis) in enumerate(PLANES):
        ax = fig.add_subplot(1, 3, column + 1)
        take = lambda volume, axis=axis: radiological(np.take(volume, int(centre[axis]), axis=axis))  # noqa: E731
        rows_axis, columns_axis = [a for a in range(3) if a != axis][::-1]
        aspect = spacing[rows_axis] / spacing[columns_axis]
        ax.imshow(take(image_ras), cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
        heat = take(entropy_ras)
        shown = ax.imshow(np.ma.masked_less(heat, 0.02 * top), cmap="magma", vmin=0, vmax=top, alpha=0.75, aspect=aspect)
        labels = take(pred_ras)
        for label in registry.foreground():
            if (labels == label.value).any():
                ax.contour(labels == label.value, levels=[0.5], colors=[tuple(c / 255 for c in label.color)], linewidths=1.0)
        ax.set_title(f"{plane} {centre[axis]}", fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=fig.axes, fraction=0.02, label="predictive entropy (nats)")
    fig.suptitle(f"{title}   predicted organs outlined; entropy 0 (certain) ... log C (uniform)")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_reliability_diagram(path: Path, confidence_before, correct_before, confidence_after, correct_after, bins: int) -> None:
    """Write a reliability diagram: accuracy against confidence per bin, before and after temperature scaling."""
    plt, fig = new_figure(5.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    edges = np.linspace(0, 1, bins + 1)
    for confidence, correct, name in ((confidence_before, correct_before, "before"), (confidence_after, correct_after, "after")):
        index = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
        counts = np.bincount(index, minlength=bins)
        filled = counts > 0
        mean_confidence = np.bincount(index, confidence, bins)[filled] / counts[filled]
        accuracy = np.bincount(index, correct.astype(float), bins)[filled] / counts[filled]
        ax.plot(mean_confidence, accuracy, marker="o", label=f"{name} temperature scaling")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability: foreground and its neighbourhood")
    ax.legend(loc="upper left")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
