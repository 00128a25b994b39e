"""Which CPU settings give the same training bits on two machines: a fingerprint to compare across CPU models.

The committed metrics are reproduced to the bit on the CPU model that made them, not on others: oneDNN picks its
convolution kernels by the CPU (RESULTS.md, "So does the CPU model"). This script trains three AdamW steps of the
default planned U-Net and V-Net (phantom plan, planned batch and patch, seeded random input, 2 threads) under
several settings, each in its own process, and records a SHA-256 of the weights after them and the seconds per step.
Run it on two machines and compare the fingerprints of one setting: a setting whose fingerprints agree, at a cost
the 20-minute `make run` can afford, is a candidate for the pipeline's default.

Settings: the default; oneDNN capped at AVX-512 without the DL Boost / AMX extensions (``AVX512_CORE``); capped at
AVX2; oneDNN off with MKL's reproducible mode (``MKL_CBWR=AVX2``).

Usage: python benchmarks/bench_determinism.py [--steps 3]
Writes benchmarks/results/determinism_<cpu>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "default": {},
    "onednn_avx512_core": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn_off_mkl_cbwr_avx2": {"SEGPIPE_PROBE_MKLDNN": "0", "MKL_CBWR": "AVX2"},
}


def train_fingerprint(name: str, steps: int) -> dict:
    """Train ``steps`` AdamW steps of the planned ``name`` on seeded random input; the weights' SHA-256 and timings."""
    import torch

    from pipeline.config import load_config, with_base_config
    from pipeline.models import build_model
    from pipeline.planning.planner import network_input_channels
    from pipeline.planning.resolve import apply_plan
    from pipeline.runtime import pin_torch_threads
    from pipeline.training.losses import SegmentationLoss

    torch.backends.mkldnn.enabled = os.environ.get("SEGPIPE_PROBE_MKLDNN", "1") == "1"
    cfg, _ = apply_plan(load_config(with_base_config([Path(f"configs/{name}.yaml")]), ["train.init_from=null"]))
    pin_torch_threads(cfg.base.torch_threads)
    torch.manual_seed(0)
    in_channels = network_input_channels(1, cfg.model.context_slices)
    model = build_model(cfg.model, in_channels, 4)
    loss_fn, optimizer = SegmentationLoss(cfg.loss), torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    shape = (cfg.train.batch_size, in_channels, *cfg.train.patch_size)
    image = torch.randn(shape)
    label = torch.randint(0, 4, (shape[0], 1, *shape[2:]))
    losses, seconds = [], []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        losses.append(float(loss))
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + tensor.detach().contiguous().numpy().tobytes())
    return {"model": name, "batch": shape[0], "patch": list(shape[2:]), "losses": losses,
            "weights_sha256": digest.hexdigest(), "seconds_per_step": min(seconds[1:] or seconds)}  # fmt: skip


def onednn_isa(env: dict[str, str]) -> str:
    """oneDNN's ISA line for a process with ``env`` (from ONEDNN_VERBOSE)."""
    code = "import torch; torch.nn.functional.conv2d(torch.randn(1, 16, 8, 8), torch.randn(16, 16, 3, 3))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    found = re.search(r"isa:(.+)", out)
    return found.group(1).strip() if found else "oneDNN not used"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_fingerprint(args.child[0], int(args.child[1]))))
        return
    rows = []
    for setting, env in SETTINGS.items():
        isa = onednn_isa(env)
        for name in ("unet2d", "vnet3d"):
            command = [sys.executable, __file__, "--child", name, str(args.steps)]
            out = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            row = {"setting": setting, "env": env, "onednn_isa": isa, **json.loads(out.stdout)}
            rows.append(row)
            print(f"{setting:26s} {name}: {row['weights_sha256'][:16]}  {row['seconds_per_step']:.2f} s/step", flush=True)
    import torch

    from pipeline.tracking.mlflow_run import cpu_model

    cpu = cpu_model()
    result = {"cpu": cpu, "torch": torch.__version__, "flags_avx512": "avx512f" in Path("/proc/cpuinfo").read_text(),
              "steps": args.steps, "rows": rows}  # fmt: skip
    slug = re.sub(r"[^a-z0-9]+", "_", cpu.lower()).strip("_") or "cpu"
    out_path = Path("benchmarks/results") / f"determinism_{slug}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
