"""Trained SAEs and analysis memos in the cache are sealed like token entries (issue "reliability").

One small planted session trains a BatchTopK SAE and computes an attention-EMD memo once;
each test copies that cache and alters it the way a crash, a disk or a person would.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from scopebench.suite.scales import PLANTED_SCALE
from scopebench.pipeline.cache import ActivationStore, CacheCorrupted
from scopebench.cli.main import main
from scopebench.sae.checkpoint import weights_sha256
from scopebench.suite.workbench import Workbench

BACKBONE, SAE, SHIFT = "planted", "batchtopk", 2
TINY = PLANTED_SCALE.updated({
    "train_images": 16, "sae_overrides": {"expansion_factor": 2, "n_tokens": 4096, "batch_size": 256},
    "reconstruction": {"images": 16}, "attention_emd": {"images": 2}, "batch_size": 8,
})


def _bench(root: Path) -> Workbench:
    return Workbench(ActivationStore(root), device="cpu", progress=False, scales={BACKBONE: TINY})


def _emd(bench: Workbench) -> dict:
    return bench.run("attention_emd", BACKBONE, shifts=(SHIFT,)).per_shift[SHIFT].model_dump()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    root = tmp_path_factory.mktemp("artefact-cache")
    bench = _bench(root)
    digest = weights_sha256(bench.sae(BACKBONE, SAE))
    return root, digest, _emd(bench)


@pytest.fixture
def cache(built, tmp_path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(built[0], root)
    return root


def _weights(root: Path) -> Path:
    (path,) = root.glob("saes/*/sae/sae.safetensors")
    return path


def _memo(root: Path) -> Path:
    (path,) = [p for p in root.glob("analyses/**/*.json") if p.name != "seal.json"]
    return path


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))


def _no_training(*args, **kwargs):
    raise AssertionError("the cached SAE should have been loaded, not trained")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_second_session_reuses_the_sealed_sae_and_memo(cache, built, monkeypatch):
    monkeypatch.setattr("scopebench.suite.workbench.train_sae", _no_training)
    bench = _bench(cache)
    assert weights_sha256(bench.sae(BACKBONE, SAE)) == built[1]
    assert _emd(bench) == built[2]
    for folder in (_weights(cache).parent.parent, _memo(cache).parent):
        seal = json.loads((folder / "seal.json").read_text())
        assert seal["info"]["backbone"] == BACKBONE and seal["kind"] in ("sae", "memo")
        canonical = json.dumps(seal["info"]["key"], sort_keys=True, separators=(",", ":"))
        assert folder.name == hashlib.sha256(canonical.encode()).hexdigest()  # named by its key, not by names


def test_edited_sae_weights_are_refused_never_reported_under_the_recipe_name(cache, monkeypatch):
    weights = _weights(cache)
    _flip_last_byte(weights)
    monkeypatch.setattr("scopebench.suite.workbench.train_sae", _no_training)
    with pytest.raises(CacheCorrupted, match="sha256 does not match seal.json") as caught:
        _bench(cache).sae(BACKBONE, SAE)
    assert caught.value.path == weights
    key = weights.parent.parent.name
    assert f"scopebench cache verify --cache-dir {cache}" in str(caught.value)
    assert f"scopebench cache clear {key[:12]} --cache-dir {cache}" in str(caught.value)


def test_sae_left_unsealed_by_a_crash_is_retrained_not_read(cache, built, monkeypatch):
    weights = _weights(cache)
    (weights.parent.parent / "seal.json").unlink(missing_ok=True)  # the run died after its checkpoint, before sealing
    _flip_last_byte(weights)
    calls = []
    from scopebench.suite.workbench import train_sae as real_train

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr("scopebench.suite.workbench.train_sae", counting)
    assert weights_sha256(_bench(cache).sae(BACKBONE, SAE)) == built[1]  # resumed from its state: same SAE
    assert calls == [1] and (weights.parent.parent / "seal.json").is_file()
    monkeypatch.setattr("scopebench.suite.workbench.train_sae", _no_training)
    assert weights_sha256(_bench(cache).sae(BACKBONE, SAE)) == built[1]


def test_crash_between_payload_and_seal_leaves_a_memo_that_is_recomputed(tmp_path, built, monkeypatch):
    root = tmp_path / "cache"
    shutil.copytree(built[0], root, ignore=shutil.ignore_patterns("analyses"))

    def crash(*args, **kwargs):
        raise OSError("killed before sealing")

    monkeypatch.setattr("scopebench.pipeline.cache.write_seal", crash)
    with pytest.raises(OSError, match="killed before sealing"):
        _emd(_bench(root))
    monkeypatch.undo()
    memo = _memo(root)
    stored = json.loads(memo.read_text())
    stored["result"]["outlier"] = 0.0  # whatever the payload says, an unsealed memo is not read
    memo.write_text(json.dumps(stored))
    assert _emd(_bench(root)) == built[2]


def test_edited_memo_is_refused_never_changes_a_verdict(cache):
    memo = _memo(cache)
    stored = json.loads(memo.read_text())
    stored["result"]["outlier"] = 0.0  # would flip "outlier attention moves more"
    memo.write_text(json.dumps(stored))
    with pytest.raises(CacheCorrupted, match="seal.json") as caught:
        _emd(_bench(cache))
    assert caught.value.path == memo


def test_truncated_memo_is_corruption_not_a_json_decode_error(cache):
    memo = _memo(cache)
    memo.write_bytes(memo.read_bytes()[:20])
    with pytest.raises(CacheCorrupted, match="truncated or altered") as caught:
        _emd(_bench(cache))
    assert caught.value.path == memo and "scopebench cache clear" in str(caught.value)


def test_memo_seal_that_is_itself_garbage_is_corruption(cache):
    seal = _memo(cache).parent / "seal.json"
    seal.write_text("{not json")
    with pytest.raises(CacheCorrupted, match="malformed seal") as caught:
        _emd(_bench(cache))
    assert caught.value.path == seal


def test_ls_lists_every_kind_with_backbone_and_name(cache, capsys):
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache))
    assert code == 0
    rows = {line.split()[1]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["sae"][2:4] == [BACKBONE, SAE] and rows["sae"][-1] == "complete/ok"
    assert rows["memo"][2:4] == [BACKBONE, "attention_emd"] and rows["memo"][-1] == "complete/ok"
    assert rows["tokens"][2] == BACKBONE


def test_verify_checks_saes_and_memos_and_fails_on_a_bad_one(cache, capsys):
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(cache))
    assert code == 0 and "4 entries checked, 0 bad" in out  # train tokens, eval tokens, the SAE, the memo
    weights = _weights(cache)
    _flip_last_byte(weights)
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(cache))
    assert code == 1 and "4 entries checked, 1 bad" in out
    assert f"BAD  {weights.parent.parent.name[:12]}  sae {BACKBONE} {SAE}" in out and str(weights) in out
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache))
    assert "CORRUPTED" not in out  # same size: ls does the cheap checks only, verify hashes
    weights.write_bytes(weights.read_bytes()[:-1])
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache))
    assert "CORRUPTED" in out


def test_clear_by_key_prefix_removes_an_sae_then_everything(cache, capsys, monkeypatch):
    sae_dir, memo_dir = _weights(cache).parent.parent, _memo(cache).parent
    code, out, _ = _cli(capsys, "cache", "clear", "--yes", sae_dir.name[:10], "--cache-dir", str(cache))
    assert code == 0 and f"deleted {sae_dir.name[:12]}" in out
    assert not sae_dir.exists() and memo_dir.exists()
    code, out, _ = _cli(capsys, "cache", "clear", "--yes", "--cache-dir", str(cache))
    assert code == 0 and not memo_dir.exists() and not [p for p in cache.iterdir() if len(p.name) == 64]
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache))
    assert "no cache entries" in out


def test_clear_skips_an_sae_a_session_is_using(cache, capsys):
    store = ActivationStore(cache)
    (kind, folder), = [(k, p) for k, p in store.find() if k == "sae"]
    slot_key = json.loads((folder / "seal.json").read_text())["info"]["key"]
    with store.artefact("sae", slot_key) as slot:
        assert slot.sealed and slot.path == folder
        code, _, err = _cli(capsys, "cache", "clear", "--yes", folder.name[:12], "--cache-dir", str(cache))
    assert code == 1 and "holds its lock" in err and (folder / "seal.json").is_file()


def test_legacy_unsealed_artefacts_are_listed_never_read_and_cleared(cache, capsys):
    legacy_sae = cache / "saes" / "planted-batchtopk-0123456789abcdef"
    (legacy_sae / "sae").mkdir(parents=True)
    legacy_memo = cache / "analyses" / "attention-emd-0123456789abcdef.json"
    legacy_memo.write_text('{"result": {}}')
    unrelated = cache / "saes" / "notes.txt"
    unrelated.write_text("mine")
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(cache))
    assert out.count("legacy (unsealed, never read)") == 2
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(cache))
    assert code == 0 and "6 entries checked, 0 bad" in out and "legacy" in out
    code, _, _ = _cli(capsys, "cache", "clear", "--yes", "--cache-dir", str(cache))
    assert code == 0 and not legacy_sae.exists() and not legacy_memo.exists() and unrelated.exists()
