"""QC figures: colour-coded overlays (image | ground truth | prediction) and training curves (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.labels import LabelRegistry
from pipeline.io_utils import atomic_path


def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg backend (no display needed); returns (pyplot, figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def colourise(label: np.ndarray, registry: LabelRegistry) -> np.ndarray:
    """RGBA image of a 2D label map in the registry's colours (background transparent)."""
    rgba = np.zeros((*label.shape, 4), dtype=np.float32)
    for item in registry.foreground():
        rgba[label == item.value] = (*(c / 255 for c in item.color), 0.55)
    return rgba


def save_overlay(
    path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, registry: LabelRegistry, title: str
) -> None:
    """Write a three-panel PNG of one axial slice: image, image + ground truth, image + prediction.

    Arrays are 2D in (x, y) RAS order; they are shown radiologically (patient left on screen right).
    """
    plt, fig = new_figure(12, 4.4)
    panels = (("image", None), ("ground truth", truth), ("prediction", prediction))
    for index, (name, label) in enumerate(panels):
        ax = fig.add_subplot(1, 3, index + 1)
        ax.imshow(radiological(image), cmap="gray")
        if label is not None:
            ax.imshow(radiological(colourise(label, registry)))
        ax.set_title(name)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(item.color) / 255) for item in registry.foreground()]
    fig.legend(handles, [item.name for item in registry.foreground()], loc="lower center", ncol=len(handles))
    fig.suptitle(title)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """A (3, x, y) photograph (any scaling) as (y, x, 3) in [0, 1], each channel stretched: shown as photographs are,
    row = y downwards, column = x."""
    rgb = np.moveaxis(image, 0, -1).swapaxes(0, 1).astype(np.float32)
    low, high = rgb.min(axis=(0, 1)), rgb.max(axis=(0, 1))
    return (rgb - low) / np.maximum(high - low, 1e-6)


def save_natural_overlay(
    path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, registry: LabelRegistry, title: str
) -> None:
    """Three panels of a photograph: the image, ground truth and prediction in the registry's colours.

    ``image`` is (3, x, y) (any scaling: each channel is stretched to [0, 1] for display); labels are (x, y).
    Shown as photographs are: row = y downwards, column = x.
    """
    rgb = _display_rgb(image)
    plt, fig = new_figure(12, 4.4)
    for index, (name, label) in enumerate((("image", None), ("ground truth", truth), ("prediction", prediction))):
        ax = fig.add_subplot(1, 3, index + 1)
        ax.imshow(rgb)
        if label is not None:
            ax.imshow(colourise(label.T, registry))
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_instance_overlay(
    path: Path,
    image: np.ndarray,
    truth: list[tuple[np.ndarray, int]],
    prediction: list[tuple[np.ndarray, int, float]],
    registry: LabelRegistry,
    title: str,
) -> None:
    """Two panels of a photograph with instance outlines: ground truth and prediction, each outline in its class's
    colour and labelled with the class name (and the score for predictions).

    ``image`` is (3, x, y); ``truth`` holds (mask (x, y), class); ``prediction`` (mask (x, y), class, score).
    """
    from scipy import ndimage

    rgb = _display_rgb(image)
    colours = {item.value: tuple(c / 255 for c in item.color) for item in registry.foreground()}
    names = {item.value: item.name for item in registry.foreground()}
    plt, fig = new_figure(9, 4.8)
    panels = (("ground truth", [(m, c, None) for m, c in truth]), ("prediction", prediction))
    for index, (name, instances) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        shown = rgb.copy()
        for mask, label, score in instances:
            mask = mask.T.astype(bool)  # (y, x) as photographs are shown
            outline = mask & ~ndimage.binary_erosion(mask)
            shown[outline] = colours.get(label, (1.0, 1.0, 1.0))
            rows, cols = np.nonzero(mask)
            if len(rows):
                text = names.get(label, str(label)) + ("" if score is None else f" {score:.2f}")
                ax.text(cols.min(), rows.min(), text, fontsize=7, color="white", va="bottom",
                        bbox={"facecolor": colours.get(label, (0, 0, 0)), "alpha": 0.7, "pad": 1, "linewidth": 0})  # fmt: skip
        ax.imshow(shown)
        ax.set_title(f"{name} ({len(instances)} instances)")
        ax.axis("off")
    fig.suptitle(title)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _is_score(key: str, score: str) -> bool:
    if score == "dice":
        return key.startswith("val_dice_")
    return key.removeprefix("val_").split("_")[0] in ("box", "mask") and "_ap" in key


def radiological(slice_xy: np.ndarray) -> np.ndarray:
    """(x, y[, rgba]) RAS slice -> rows anterior..posterior, columns patient right..left (screen left = patient right)."""
    return np.flip(np.swapaxes(slice_xy, 0, 1), axis=(0, 1))


def save_training_curves(path: Path, history: list[dict], score: str = "dice") -> None:
    """Write a PNG with the training loss and the validation scores ``val_<score>_*`` per epoch (Dice per class and
    mean by default; ``score="ap"`` gives Mask R-CNN's box and mask AP)."""
    plt, fig = new_figure(10, 4)
    epochs = [h["epoch"] for h in history]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [h["train_loss"] for h in history], marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax = fig.add_subplot(1, 2, 2)
    keys = sorted({k for h in history for k in h if k.startswith("val_") and _is_score(k, score)})
    validated = [h for h in history if keys and keys[0] in h]
    for key in keys:
        ax.plot([h["epoch"] for h in validated], [h[key] for h in validated], marker=".", label=key.removeprefix("val_"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Dice" if score == "dice" else "validation AP")
    ax.set_ylim(0, 1)
    if validated:
        ax.legend()
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_reconstruction_grid(
    path: Path, inputs: np.ndarray, reconstructions: np.ndarray, samples: np.ndarray | None = None
) -> None:
    """PNG grid of 2D slices: inputs (top row), their reconstructions, and (VAE) samples from the prior.

    Arrays are (N, x, y) RAS slices, shown radiologically on a shared grey scale per row pair.
    """
    rows = [("input", inputs), ("reconstruction", reconstructions)] + ([("prior sample", samples)] if samples is not None else [])
    columns = max(len(r[1]) for r in rows)
    plt, fig = new_figure(1.8 * columns, 1.9 * len(rows))
    low, high = np.percentile(inputs, [1, 99])
    for r, (name, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = fig.add_subplot(len(rows), columns, r * columns + c + 1)
            ax.imshow(radiological(image), cmap="gray", vmin=low, vmax=high)
            ax.axis("off")
            if c == 0:
                ax.set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
