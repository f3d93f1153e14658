"""`scopebench weights NAME`: the lookup order it prints and its verdict, against real files on disk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tables import parse_table

from scopebench.backbones.weights import CONFIG_ENV
from scopebench.cli.main import main

DEIT_REPO = "timm/deit3_small_patch16_224.fb_in22k_ft_in1k"


@pytest.fixture(autouse=True)
def hub(offline_hub) -> Path:
    """The empty HF cache of `offline_hub`, set up for every test here."""
    return offline_hub


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_missing_weights_list_every_place_and_say_how_to_provide_them(hub, capsys):
    code, out, err = _cli(capsys, "weights", "deit3-s")
    assert code == 1
    places = parse_table(out, "step")
    assert [row["step"] for row in places] == ["1", "2", "3", "3"]
    assert places[0]["location"] == "not given" and places[1]["location"] == "unset"
    repo_dir = hub / f"models--{DEIT_REPO.replace('/', '--')}" / "snapshots" / "*"
    assert [row["location"] for row in places[2:]] == [str(repo_dir / "model.safetensors"),
                                                       str(repo_dir / "pytorch_model.bin")]
    assert err.startswith("missing: no weights found for backbone 'deit3-s'")
    assert "--weights deit3-s=/path/to/model.safetensors" in err and CONFIG_ENV in err
    assert f"huggingface-cli download {DEIT_REPO} model.safetensors" in err and str(hub) in err


def test_found_in_the_hf_cache(hub, capsys):
    file = hub / f"models--{DEIT_REPO.replace('/', '--')}" / "snapshots" / "c0ffee" / "pytorch_model.bin"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"weights")
    code, out, err = _cli(capsys, "weights", "deit3-s")
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == f"found: {file}"


def test_explicit_file_and_config_file(tmp_path, monkeypatch, capsys):
    file = tmp_path / "clip.safetensors"
    file.write_bytes(b"weights")
    code, out, _ = _cli(capsys, "weights", "clip-b16", "--weights", str(file))
    assert code == 0 and out.splitlines()[-1] == f"found: {file}"
    assert parse_table(out, "step") == [{"step": "1", "place": "explicit file (--weights)", "location": str(file)}]
    code, _, err = _cli(capsys, "weights", "clip-b16", "--weights", str(tmp_path / "absent.bin"))
    assert code == 1 and "do not exist" in err and str(tmp_path / "absent.bin") in err

    config = tmp_path / "weights.json"
    config.write_text(json.dumps({"clip-b16": "clip.safetensors"}))  # relative to the config file
    monkeypatch.setenv(CONFIG_ENV, str(config))
    code, out, _ = _cli(capsys, "weights", "clip-b16")
    assert code == 0 and out.splitlines()[-1] == f"found: {file}"
    assert parse_table(out, "step")[1]["location"] == f"{config} (entry 'clip-b16')"
    code, _, err = _cli(capsys, "weights", "clip-l14")  # the config has no entry for it: falls through to the cache
    assert code == 1 and "no weights found for backbone 'clip-l14'" in err


def test_unknown_name_bad_config_and_planted(tmp_path, monkeypatch, capsys):
    code, out, err = _cli(capsys, "weights", "clip-b32")
    assert code == 2 and out == "" and "unknown backbone 'clip-b32'" in err and "clip-b16" in err
    code, out, _ = _cli(capsys, "weights", "planted")
    assert code == 0 and "built in" in out
    config = tmp_path / "weights.json"
    config.write_text(json.dumps({"clip-b16": 3}))
    monkeypatch.setenv(CONFIG_ENV, str(config))
    code, _, err = _cli(capsys, "weights", "clip-b16")
    assert code == 2 and str(config) in err and "must map backbone names to file paths" in err
