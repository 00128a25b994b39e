"""Peak memory of reading and preprocessing one case, as a multiple of its decoded float32 volume (``tracemalloc``).

``tracemalloc`` sees numpy's and Python's allocations (SimpleITK's own buffers are outside it, and so is the process's
baseline), so the figures are the pipeline's working set per case, comparable between versions.
Usage (after ``segpipe plan``): python benchmarks/bench_memory.py  ->  benchmarks/results/memory.json
"""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from pathlib import Path


def _peak(function) -> int:
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    from pipeline.config import load_config
    from pipeline.data.layout import load_dataset
    from pipeline.data.nifti import read_nifti
    from pipeline.planning.plans import read_plans
    from pipeline.preprocess.run import make_plan, planned_grids, preprocess_case

    cfg = load_config()
    dataset, plans = load_dataset(cfg.data.root), read_plans(cfg.plan.file)
    case = dataset.split("train")[0]
    volume = read_nifti(case.images[0]).data
    float32_bytes = volume.size * 4
    rows = {"case": case.case_id, "shape": list(volume.shape), "stored_dtype": str(volume.dtype)}
    rows["read"] = round(_peak(lambda: read_nifti(case.images[0])) / float32_bytes, 2)
    for grid, spacing in planned_grids(plans).items():
        with tempfile.TemporaryDirectory() as scratch:
            plan = make_plan(dataset, cfg.preprocess, plans, spacing, Path(scratch), cfg.checks)
            rows[f"preprocess_{grid}"] = round(_peak(lambda plan=plan: preprocess_case(case, plan)) / float32_bytes, 2)
    out = Path("benchmarks/results/memory.json")
    out.write_text(json.dumps({"peak_over_decoded_float32_volume": rows}, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
