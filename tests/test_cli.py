"""`scopebench cache ls | verify | clear` against real entries in a temporary store."""
from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from scopebench.pipeline.cache import ActivationStore, CacheCorrupted, CacheKey
from scopebench.cli.main import build_parser, default_cache_dir, main

TOKENS = CacheKey(kind="tokens", backbone="planted", weights_id="random-init:0", layer=1, dataset="scenes:v1",
                  transform="{}", sampling="all:n=6", dtype="float32")
SCC = replace(TOKENS, kind="scc-s1", dataset="imagenet-val")


def _write(store: ActivationStore, key: CacheKey, finish: bool = True) -> Path:
    tokens = np.arange(6 * 4 * 2, dtype=np.float32).reshape(6, 4, 2)
    name = "tokens" if key.kind == "tokens" else "tokens_a"
    with store.writer(key, n_rows=6, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: tokens[:4]})
        if finish:
            writer.write_shard(1, {name: tokens[4:]})
            writer.finish()
    return store.path(key)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ls_prints_one_readable_row_per_entry(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    _write(store, TOKENS)
    _write(store, SCC, finish=False)
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["key", "kind", "backbone", "name", "dataset", "shape", "size", "status"]
    row_tokens = next(line for line in lines if line.startswith(TOKENS.digest[:12]))
    row_scc = next(line for line in lines if line.startswith(SCC.digest[:12]))
    assert row_tokens.split()[1:6] == ["tokens", "planted", "-", "scenes:v1", "6x4x2"]
    assert row_tokens.rstrip().endswith("complete/ok")
    assert row_scc.split()[1:6] == ["scc-s1", "planted", "-", "imagenet-val", "6x4x2"]
    assert "incomplete (1/2 shards)" in row_scc
    on_disk = sum(p.stat().st_size for p in store.path(TOKENS).rglob("*") if p.is_file())
    assert f"{on_disk / 1024:.1f} KiB" in row_tokens


def test_ls_of_empty_store_and_env_default(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCOPEBENCH_CACHE", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    code, out, _ = _cli(capsys, "cache", "ls")
    assert code == 0 and f"no cache entries under {tmp_path / 'from-env'}" in out
    monkeypatch.delenv("SCOPEBENCH_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "scopebench"


def test_verify_passes_clean_store_and_names_bad_entries(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    good, bad = _write(store, TOKENS), _write(store, SCC)
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(tmp_path))
    assert code == 0 and "2 entries checked, 0 bad" in out
    shard = bad / "shards" / "tokens_a-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(tmp_path))
    assert code == 1
    assert f"BAD  {bad.name[:12]}" in out and str(shard) in out and "sha256" in out
    assert f"ok   {good.name[:12]}" in out and "2 entries checked, 1 bad" in out
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(tmp_path))
    assert code == 0 and "complete/ok" in out  # ls does the cheap checks only: same size, same header
    code, _, _ = _cli(capsys, "cache", "verify", good.name[:8], "--cache-dir", str(tmp_path))
    assert code == 0


def test_verify_reports_broken_meta_and_unknown_prefix(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    entry = _write(store, TOKENS)
    (entry / "meta.json").write_text("{")
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(tmp_path))
    assert code == 1 and "malformed meta.json" in out and str(entry / "meta.json") in out
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(tmp_path))
    assert "CORRUPTED" in out
    code, _, err = _cli(capsys, "cache", "verify", "ffffffff", "--cache-dir", str(tmp_path))
    assert code == 2 and "matches 'ffffffff'" in err


def test_clear_by_prefix_with_yes(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    keep, drop = _write(store, TOKENS), _write(store, SCC)
    code, out, _ = _cli(capsys, "cache", "clear", "--yes", drop.name[:10], "--cache-dir", str(tmp_path))
    assert code == 0 and f"deleted {drop.name[:12]}" in out
    assert not drop.exists() and keep.exists()
    assert [p.name for p in tmp_path.iterdir()] == [keep.name]


def test_clear_asks_and_aborts_unless_confirmed(tmp_path, capsys, monkeypatch):
    store = ActivationStore(tmp_path)
    entry = _write(store, TOKENS)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, _ = _cli(capsys, "cache", "clear", "--cache-dir", str(tmp_path))
    assert code == 1 and "nothing deleted" in out and entry.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: never delete silently
    assert _cli(capsys, "cache", "clear", "--cache-dir", str(tmp_path))[0] == 1 and entry.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, _ = _cli(capsys, "cache", "clear", "--cache-dir", str(tmp_path))
    assert code == 0 and not entry.exists()


def test_clear_skips_an_entry_being_written(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    entry = _write(store, TOKENS)
    with FileLock(str(entry / "entry.lock")):
        code, _, err = _cli(capsys, "cache", "clear", "--yes", "--cache-dir", str(tmp_path))
    assert code == 1 and "a writer holds its lock" in err and (entry / "meta.json").exists()


def test_parser_requires_a_command_and_lists_cache_subcommands(capsys):
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["cache", "frobnicate"])
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert "cache" in help_text


def test_the_commands_a_corruption_error_suggests_actually_work(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    entry = _write(store, TOKENS)
    (entry / "shards" / "tokens-00000.npy").unlink()
    with pytest.raises(CacheCorrupted) as caught:
        store.read(TOKENS)
    verify, clear = re.findall(r"`scopebench (cache [^`]+)`", str(caught.value))
    code, out, _ = _cli(capsys, *shlex.split(verify))
    assert code == 1 and f"BAD  {entry.name[:12]}" in out
    code, _, _ = _cli(capsys, *shlex.split(clear), "--yes")
    assert code == 0 and not entry.exists()


def test_every_command_is_registered_with_help(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    for command in ("backbones", "weights", "claims", "recipes", "leaderboard", "cache"):
        assert command in help_text
        with pytest.raises(SystemExit) as caught:
            main([command, "--help"])
        assert caught.value.code == 0
        assert f"usage: scopebench {command}" in capsys.readouterr().out


def test_building_the_parser_does_not_import_torch():
    """`scopebench --help`, `claims` and `cache` stay fast: heavy modules load only when a command needs them."""
    code = "import sys; from scopebench.cli.main import build_parser; build_parser(); print(sorted({'torch', 'timm', " \
           "'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_module_entry_point_returns_the_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scopebench.cli.main", "cache", "verify", "ffffffff", "--cache-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "matches 'ffffffff'" in done.stderr


def test_verify_says_when_the_folder_holds_no_cache(tmp_path, capsys):
    code, out, err = _cli(capsys, "cache", "verify", "--cache-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err and "entries checked" not in out
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"\xff\xd8")
    (unrelated / "album").mkdir()
    for argv in (["verify"], ["ls"], ["clear", "--yes"]):
        code, _, err = _cli(capsys, "cache", *argv, "--cache-dir", str(unrelated))
        assert code == 2 and "is not a scopebench cache" in err, argv
    assert sorted(p.name for p in unrelated.iterdir()) == ["album", "holiday.jpg"]  # nothing cleared
    empty = tmp_path / "fresh"
    empty.mkdir()  # a just-created cache root: valid, with nothing in it
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(empty))
    assert code == 0 and "no entries" in out


def test_ls_survives_a_huge_n_rows_and_reports_it(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    with store.writer(TOKENS, n_rows=8, rows_per_shard=4) as writer:  # full shards: their ranges fit any n_rows
        for index in (0, 1):
            writer.write_shard(index, {"tokens": np.zeros((4, 4, 2), np.float32)})
        writer.finish()
    entry = store.path(TOKENS)
    meta = json.loads((entry / "meta.json").read_text())
    meta["n_rows"] = 10**15
    (entry / "meta.json").write_text(json.dumps(meta))
    code, out, _ = _cli(capsys, "cache", "ls", "--cache-dir", str(tmp_path))
    assert code == 0 and "CORRUPTED" in out and str(entry / "meta.json") in out
    code, out, _ = _cli(capsys, "cache", "verify", "--cache-dir", str(tmp_path))
    assert code == 1 and f"BAD  {entry.name[:12]}" in out


_READER = """
import sys
from scopebench.pipeline.cache import ActivationStore, CacheKey
tokens = ActivationStore(sys.argv[1]).read(CacheKey(**{key!r}))["tokens"]
first = tokens[0].copy()
print("ready", flush=True)
sys.stdin.readline()
assert (tokens[0] == first).all()  # a shard read before the clear stays readable
try:
    tokens[5]  # a shard not read yet
    print("read")
except Exception as err:
    print(type(err).__name__, err)
"""


def test_clear_while_another_process_reads_reports_removed_never_corrupted(tmp_path, capsys):
    store = ActivationStore(tmp_path)
    entry = _write(store, TOKENS)
    script = _READER.format(key=dict(TOKENS.__dict__))
    reader = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        code, out, _ = _cli(capsys, "cache", "clear", "--yes", "--cache-dir", str(tmp_path))
        assert code == 0 and f"deleted {entry.name[:12]}" in out and not entry.exists()
        out, err = reader.communicate("go\n", timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    assert out.startswith("CacheMissing") and "removed while reading" in out and "corrupted" not in out
