"""``scopebench submit`` end to end: an SAE saved by another library (SAELens layout) becomes a leaderboard row.

The real command runs the real claims suite (a pytest subprocess over ``bench/``) on the planted
backbone at a tiny ``--scale``, then re-renders the Markdown, CSV and HTML leaderboard. A second
model under the same name is refused and changes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from scopebench.backbones import get_spec
from scopebench.cli.main import main
from scopebench.results.records import load_result

REPO = Path(__file__).resolve().parents[1]
TINY = {"planted": {
    "reconstruction": {"images": 16}, "cds": {"images": 24, "k": 4}, "feature_maps": {"n_features": 2, "n_images": 2},
    "batch_size": 16,
    "removal_probes": {"train_images": 32, "val_images": 16, "test_images": 16, "task_images": {"cls": [48, 16, 32]},
                       "classification": {"epochs": 2, "trials": 1}, "segmentation": {"epochs": 1, "trials": 1},
                       "depth": {"epochs": 1, "trials": 1}}}}


def _saelens_folder(folder: Path, seed: int) -> Path:
    """What SAELens writes for a TopK SAE: cfg.json + sae_weights.safetensors (W_enc [d_in, d_sae])."""
    d_in, d_sae = get_spec("planted").embed_dim, 128
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=g), dim=1)
    folder.mkdir()
    save_file({"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in)},
              str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": d_sae, "architecture": "topk", "k": 30,
                                                 "apply_b_dec_to_input": True, "normalize_activations": "none"}))
    return folder


def test_a_saelens_checkpoint_is_submitted_and_rendered_and_its_name_is_then_taken(tmp_path: Path, monkeypatch,
                                                                                   capfd) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scale = tmp_path / "tiny.json"
    scale.write_text(json.dumps(TINY))
    board = tmp_path / "board"
    common = ["--backbone", "planted", "--name", "lens-topk", "--results-dir", str(board / "results"),
              "--cache-dir", str(tmp_path / "cache"), "--scale", str(scale), "--device", "cpu"]
    assert main(["submit", str(_saelens_folder(tmp_path / "mine", seed=0)), *common]) == 0

    record = load_result(board / "results" / "planted__lens-topk.json")
    assert record.sae.name == "lens-topk" and "saelens" in json.dumps(record.sae.config)  # read as SAELens
    assert set(record.analyses) == {"reconstruction", "cds", "awcds", "feature_maps"}
    # a random dictionary has a unimodal CDS histogram: no gamma, so Table 4's claim is recorded as not held
    # with the reason, and the removal probes (which need the partition) skip instead of inventing groups
    assert "no valley is significant" in record.output("cds").no_partition
    assert not record.claims["table4.high-cds-minority"].passed
    assert record.analyses["cds"].config["images"] == 24  # the --scale changes are what ran, and are recorded
    assert record.claims and not any(v.asserted for v in record.claims.values())  # scored, not asserted
    assert record.output("reconstruction").l0_a == pytest.approx(30.0)  # TopK with k=30: exactly 30 per token
    csv = pd.read_csv(board / "leaderboard.csv")
    assert csv[["backbone", "SAE"]].values.tolist() == [["planted", "lens-topk"]]
    assert "lens-topk" in (board / "LEADERBOARD.md").read_text()
    page = (board / "leaderboard.html").read_text()
    assert "lens-topk" in page and "Figure 9, lens-topk" in page and "Figure 6" in page

    first = (board / "results" / "planted__lens-topk.json").read_bytes()
    capfd.readouterr()
    assert main(["submit", str(_saelens_folder(tmp_path / "other", seed=1)), *common]) == 1
    assert (board / "results" / "planted__lens-topk.json").read_bytes() == first
    captured = capfd.readouterr()
    assert "already taken by another model" in captured.out + captured.err
