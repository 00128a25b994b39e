"""ONNX Runtime as an inference backend (``infer.backend: onnx``).

Training exports each network beside ``model.pt`` as ``model.onnx`` with ``torch.onnx.export(dynamo=True)``: batch and
spatial axes are free, each spatial axis in multiples of the network's stride along it (what a sliding window or any
whole volume padded to the stride feeds it). At inference :class:`OnnxNetwork` stands in for the PyTorch module, so the
sliding window, mirroring, restore and everything after are the same code. Parity with PyTorch is a test (max |dp| on a
scan <= 1e-4); which backend is faster is measured in ``benchmarks/bench_onnx.py`` and decides the default.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError, InvalidInputError

ONNX_FILE = "model.onnx"
MAX_MULTIPLE = 256  # spatial axes up to 256 x stride voxels


def export_onnx(network: torch.nn.Module, in_channels: int, patch_size: tuple[int, ...], strides: tuple[int, ...],
                path: Path) -> Path:  # fmt: skip
    """Export ``network`` (eval mode, CPU) to ONNX with free batch and stride-multiple spatial axes; atomic write.

    Raises:
        ConfigError: the ``onnx``/``onnxscript`` packages are missing.
    """
    from pipeline.io_utils import atomic_path

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ConfigError("exporting to ONNX needs onnx and onnxscript: pip install -e .") from None
    dim = torch.export.Dim
    spatial = {axis + 2: dim(f"s{axis}", min=1, max=MAX_MULTIPLE) * int(s) for axis, s in enumerate(strides)}
    example = torch.zeros(2, in_channels, *patch_size)
    network = network.cpu().eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # torch's own exporter trips its own deprecation (copying a LeafSpec); not ours to act on
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        program = torch.onnx.export(
            network, (example,), dynamo=True, dynamic_shapes=({0: dim("batch", min=1, max=1024), **spatial},),
            input_names=["image"], output_names=["logits"], verbose=False,
        )  # fmt: skip
    _sort_range_constraints(program)
    _drop_stack_traces(program)
    with atomic_path(Path(path)) as tmp:
        program.save(str(tmp))
    return Path(path)


def _sort_range_constraints(program) -> None:
    """Write the exporter's record of the free axes' ranges in a fixed order, so equal networks give equal files.

    The exporter stores ``str`` of a dict keyed by sympy symbols, whose order follows the process's string hashing:
    two exports of the same weights in two processes differed in that one line.
    """
    key = "pkg.torch.export.ExportedProgram.range_constraints"
    props = program.model.graph.metadata_props
    if key in props:
        constraints = program.exported_program.range_constraints
        props[key] = str(dict(sorted(constraints.items(), key=lambda item: str(item[0]))))


def _drop_stack_traces(program) -> None:
    """Remove the Python stack trace the exporter records on every node: it holds the absolute paths of the checkout
    and the environment, so the same weights exported from two folders gave two files (and the model would carry the
    user's paths). The node names, namespaces and class hierarchy stay."""
    key = "pkg.torch.onnx.stack_trace"
    graphs = [program.model.graph, *program.model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            node.metadata_props.pop(key, None)


class OnnxNetwork(torch.nn.Module):
    """A network run by ONNX Runtime on the CPU: takes and returns torch tensors like the module it replaces."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("infer.backend=onnx needs onnxruntime: pip install -e .") from None
        if not Path(path).is_file():
            raise InvalidInputError(path, "no ONNX model: the model was trained before segpipe exported one; retrain it or "
                                    "use infer.backend=torch")  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for missing or invalid files
            raise InvalidInputError(path, f"cannot load the ONNX model ({type(exc).__name__}: {exc})") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(image.detach().cpu().numpy(), np.float32)})[0]
        return torch.from_numpy(logits).to(image.device)
