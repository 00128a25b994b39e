"""The canonical model file: atomic, and the same bytes for the same tensors (so dvc.lock hashes reproduce)."""

from __future__ import annotations

import hashlib

import torch

from pipeline.training.checkpoint import save_state_dict


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_the_same_weights_give_the_same_file_bytes_whatever_the_path(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Conv3d(2, 3, 3)
    save_state_dict(tmp_path / "a" / "model.pt", network)
    save_state_dict(tmp_path / "b" / "other.pt", network)  # another name and folder: torch used to embed the name
    assert _md5(tmp_path / "a" / "model.pt") == _md5(tmp_path / "b" / "other.pt")
    with torch.no_grad():
        network.bias[0] += 1e-7  # one weight one step away: other bytes
    save_state_dict(tmp_path / "c" / "model.pt", network)
    assert _md5(tmp_path / "c" / "model.pt") != _md5(tmp_path / "a" / "model.pt")
    loaded = torch.load(tmp_path / "c" / "model.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in network.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.pt"]  # no temporary file left behind
