"""Activation store: hashing, atomic sharded writes, resume, and corruption detection."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock, Timeout

from scopebench.pipeline.cache import ActivationStore, CacheCorrupted, CacheIncomplete, CacheKey, CacheMissing, EntryMeta

KEY = CacheKey(kind="tokens", backbone="fake", weights_id="random-init:0", layer=1, dataset="toy:v1",
               transform='{"op":"square_resize"}', sampling="all:n=10", dtype="float32")


def _data(n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"tokens": rng.normal(size=(n, 4, 3)).astype(np.float32),
            "prefix": rng.normal(size=(n, 1, 3)).astype(np.float32)}


def _fill(store: ActivationStore, key: CacheKey, data: dict[str, np.ndarray], rows_per_shard: int = 4) -> None:
    n = len(next(iter(data.values())))
    with store.writer(key, n_rows=n, rows_per_shard=rows_per_shard) as writer:
        for index in writer.missing_shards():
            start, stop = writer.shard_range(index)
            writer.write_shard(index, {name: a[start:stop] for name, a in data.items()})
        writer.finish()


def test_key_digest_is_sha256_of_sorted_compact_json():
    fields = {"kind": "tokens", "backbone": "fake", "weights_id": "random-init:0", "layer": 1, "dataset": "toy:v1",
              "transform": '{"op":"square_resize"}', "sampling": "all:n=10", "dtype": "float32"}
    text = "{" + ",".join(f'"{k}":{json.dumps(fields[k])}' for k in sorted(fields)) + "}"
    assert KEY.digest == hashlib.sha256(text.encode()).hexdigest()


def test_every_key_field_changes_the_folder():
    variants = [replace(KEY, kind="scc-s1"), replace(KEY, backbone="other"), replace(KEY, weights_id="sha:1"),
                replace(KEY, layer=2), replace(KEY, dataset="toy:v2"), replace(KEY, transform="{}"),
                replace(KEY, sampling="all:n=11"), replace(KEY, dtype="float16")]
    digests = {KEY.digest, *(v.digest for v in variants)}
    assert len(digests) == len(variants) + 1


def test_bad_key_fields_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="dtype 'bfloat16' is not storable"):
        replace(KEY, dtype="bfloat16")
    with pytest.raises(ValueError, match="CacheKey.dataset must be a non-empty string"):
        replace(KEY, dataset="")


def test_round_trip_across_shards_is_memory_mapped_and_exact(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    _fill(store, KEY, data)
    entry = store.read(KEY)
    tokens = entry["tokens"]
    assert tokens.shape == (10, 4, 3) and tokens.n_shards == 3
    np.testing.assert_array_equal(np.asarray(tokens), data["tokens"])
    as_double = np.asarray(tokens, dtype=np.float64)
    assert as_double.dtype == np.float64 and np.array_equal(as_double, data["tokens"])
    with pytest.raises(ValueError, match="always copies"):
        np.array(tokens, copy=False)
    np.testing.assert_array_equal(tokens[5], data["tokens"][5])
    np.testing.assert_array_equal(tokens[2:9, 1:3], data["tokens"][2:9, 1:3])  # crosses shard borders
    np.testing.assert_array_equal(tokens[[9, 0, 4]], data["tokens"][[9, 0, 4]])
    np.testing.assert_array_equal(tokens[-1], data["tokens"][-1])
    assert isinstance(tokens[4:6], np.memmap)  # inside one shard: a view, no copy
    starts = [start for start, _ in tokens.iter_batches(3)]
    assert starts == [0, 3, 4, 7, 8]  # batches stop at shard borders
    rebuilt = np.concatenate([rows for _, rows in tokens.iter_batches(3)])
    np.testing.assert_array_equal(rebuilt, data["tokens"])
    meta = json.loads((store.path(KEY) / "meta.json").read_text())
    assert meta["complete"] and meta["rows_per_shard"] == 4 and meta["key_hash"] == KEY.digest
    for record in meta["shards"]:
        file = store.path(KEY) / record["file"]
        assert record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        np.testing.assert_array_equal(np.load(file), data[record["array"]][record["start"]:record["stop"]])


def test_paired_fancy_indexing_follows_numpy(tmp_path):
    """tokens[images, patches] picks one token per pair (SAE sampling), never an outer product."""
    store, data = ActivationStore(tmp_path), _data()
    _fill(store, KEY, data)
    tokens, expected = store.read(KEY)["tokens"], data["tokens"]
    images, patches = np.array([9, 0, 4, 4, 7]), np.array([1, 3, 0, 2, 2])
    np.testing.assert_array_equal(tokens[images, patches], expected[images, patches])
    np.testing.assert_array_equal(tokens[images, patches, 2], expected[images, patches, 2])
    np.testing.assert_array_equal(tokens[images, 1], expected[images, 1])
    dims = np.array([0, 2, 1, 0, 2])  # index arrays apart, around a slice: still paired, as numpy does
    np.testing.assert_array_equal(tokens[images, :, dims], expected[images, :, dims])
    np.testing.assert_array_equal(tokens[[1, 4], :, 0], expected[[1, 4], :, 0])


def test_incomplete_entry_cannot_be_read_and_resumes_at_first_missing_shard(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
    with pytest.raises(CacheIncomplete, match="1 of 3 shards written.*scopebench cache clear"):
        store.read(KEY)
    assert store.status(KEY) == "incomplete"
    with store.writer(KEY, n_rows=10, rows_per_shard=99) as writer:  # the stored layout wins
        assert writer.missing_shards() == [1, 2]
        assert writer.shard_range(1) == (4, 8)
    _fill(store, KEY, data)
    np.testing.assert_array_equal(np.asarray(store.read(KEY)["prefix"]), data["prefix"])


def test_shard_shape_or_dtype_mismatch_is_refused(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
        with pytest.raises(ValueError, match="expected \\(4, 4, 3\\) float32"):
            writer.write_shard(1, {"tokens": data["tokens"][4:8].astype(np.float64), "prefix": data["prefix"][4:8]})
        with pytest.raises(ValueError, match="has arrays \\['tokens'\\]"):
            writer.write_shard(1, {"tokens": data["tokens"][4:8]})


def _shard_file(store: ActivationStore, array: str = "tokens", index: int = 1) -> Path:
    return store.path(KEY) / "shards" / f"{array}-{index:05d}.npy"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, "size is .* bytes"),
    (lambda path: path.unlink(), "missing"),
    (_flip_byte, "sha256 does not match"),
])
def test_damaged_shard_is_named_never_read(tmp_path, damage, message):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    target = _shard_file(store)
    damage(target)
    with pytest.raises(CacheCorrupted, match=message) as caught:
        np.asarray(store.read(KEY)["tokens"])
    assert caught.value.path == target
    assert str(target) in str(caught.value) and "scopebench cache verify" in str(caught.value)
    assert f"scopebench cache clear {KEY.digest[:12]}" in str(caught.value)
    assert store.verify(store.path(KEY)).problem is not None


def test_flipped_byte_is_caught_at_first_read_of_that_shard(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    _fill(store, KEY, data)
    _flip_byte(_shard_file(store, index=2))
    tokens = store.read(KEY)["tokens"]  # sizes and headers are fine: opening succeeds
    np.testing.assert_array_equal(tokens[0:4], data["tokens"][0:4])  # an intact shard reads fine
    with pytest.raises(CacheCorrupted, match="tokens-00002.npy"):
        tokens[9]


def test_header_rewritten_to_other_shape_is_caught(tmp_path):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    target = _shard_file(store)
    np.save(target, np.zeros((4, 3, 4), np.float32))  # same byte count, different shape
    with pytest.raises(CacheCorrupted, match="header says shape \\(4, 3, 4\\)"):
        store.read(KEY)


@pytest.mark.parametrize("broken", ["{not json", '{"format_version": 1}', ""])
def test_broken_meta_json_is_named(tmp_path, broken):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    meta = store.path(KEY) / "meta.json"
    meta.write_text(broken)
    with pytest.raises(CacheCorrupted, match="malformed meta.json") as caught:
        store.read(KEY)
    assert caught.value.path == meta


def test_meta_json_of_another_key_is_refused(tmp_path):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    other = replace(KEY, layer=7)
    store.path(other).mkdir()
    (store.path(other) / "meta.json").write_text((store.path(KEY) / "meta.json").read_text())
    with pytest.raises(CacheCorrupted, match="does not hash to the folder name"):
        store.read(other)


def test_resume_refuses_a_corrupted_earlier_shard(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
    _flip_byte(_shard_file(store, index=0))
    with pytest.raises(CacheCorrupted, match="tokens-00000.npy"):
        with store.writer(KEY, n_rows=10, rows_per_shard=4):
            pass


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store, data = ActivationStore(tmp_path), _data()

    def exploding_save(handle, array, allow_pickle=False):
        handle.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
        monkeypatch.setattr(np, "save", exploding_save)
        with pytest.raises(OSError, match="disk full"):
            writer.write_shard(1, {name: a[4:8] for name, a in data.items()})
    monkeypatch.undo()
    shards = sorted(p.name for p in (store.path(KEY) / "shards").iterdir())
    assert shards == ["prefix-00000.npy", "tokens-00000.npy"]  # no temp file, no half shard
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        assert writer.missing_shards() == [1, 2]


def test_writer_holds_the_entry_lock(tmp_path):
    store = ActivationStore(tmp_path)
    with store.writer(KEY, n_rows=10, rows_per_shard=4):
        with pytest.raises(Timeout):
            FileLock(str(store.path(KEY) / "entry.lock"), timeout=0).acquire()
        with pytest.raises(Timeout):
            store.remove(store.path(KEY))
    store.remove(store.path(KEY))
    assert not store.path(KEY).exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- seals, metadata validation, removal


def _edit_meta(store: ActivationStore, edit) -> Path:
    path = store.path(KEY) / "meta.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return path


def test_complete_entry_is_sealed_over_meta_and_every_shard(tmp_path):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    seal = json.loads((store.path(KEY) / "seal.json").read_text())
    meta = json.loads((store.path(KEY) / "meta.json").read_text())
    assert seal["kind"] == "tokens" and set(seal["files"]) == {"meta.json", *(r["file"] for r in meta["shards"])}
    for name, record in seal["files"].items():
        raw = (store.path(KEY) / name).read_bytes()
        assert record == {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


def test_edited_meta_json_that_still_parses_is_refused(tmp_path):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    meta = store.path(KEY) / "meta.json"
    text = meta.read_text()
    meta.write_text(text.replace('"created": "2', '"created": "1'))  # same size, still valid
    assert meta.read_text() != text
    with pytest.raises(CacheCorrupted, match="sha256 does not match seal.json") as caught:
        store.read(KEY)
    assert caught.value.path == meta and f"scopebench cache clear {KEY.digest[:12]}" in str(caught.value)
    assert store.verify(store.path(KEY)).problem is not None


def test_crash_between_payload_and_seal_leaves_an_entry_that_is_resealed_not_read(tmp_path, monkeypatch):
    store, data = ActivationStore(tmp_path), _data()

    def crash(*args, **kwargs):
        raise OSError("killed before sealing")

    monkeypatch.setattr("scopebench.pipeline.cache.write_seal", crash)
    with pytest.raises(OSError, match="killed before sealing"):
        _fill(store, KEY, data)
    monkeypatch.undo()
    assert json.loads((store.path(KEY) / "meta.json").read_text())["complete"]  # payload and meta are all there
    assert store.status(KEY) == "incomplete"
    with pytest.raises(CacheIncomplete, match="not sealed.*verify and seal it"):
        store.read(KEY)
    _flip_byte(_shard_file(store, index=2))  # what re-sealing must not vouch for
    with pytest.raises(CacheCorrupted, match="tokens-00002.npy"):
        with store.writer(KEY, n_rows=10, rows_per_shard=4):
            pass
    _flip_byte(_shard_file(store, index=2))
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:  # re-verifies every shard, then seals
        assert writer.complete and writer.missing_shards() == []
    assert store.status(KEY) == "complete"
    np.testing.assert_array_equal(np.asarray(store.read(KEY)["tokens"]), data["tokens"])


@pytest.mark.parametrize("n_rows", [10**15, 16, 11, 4])
def test_n_rows_that_the_listed_shards_do_not_hold_is_corruption_and_allocates_nothing(tmp_path, n_rows):
    """A huge n_rows must not make `cache ls` build a set of 10**15 shard indices."""
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data(12))  # 3 full shards: every listed row range still fits a larger n_rows
    meta = _edit_meta(store, lambda m: m.update(n_rows=n_rows))
    with pytest.raises(CacheCorrupted, match="does not fit|lists 6 shard files") as caught:
        EntryMeta.load(store.path(KEY), tmp_path)
    assert caught.value.path == meta
    assert [info.problem is not None for info in store.entries()] == [True]


def test_inflated_rows_per_shard_is_caught_from_the_recorded_bytes(tmp_path):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())

    def inflate(meta):
        meta.update(n_rows=10**12, rows_per_shard=10**12)
        meta["shards"] = [dict(r, stop=10**12) for r in meta["shards"] if r["index"] == 0]

    _edit_meta(store, inflate)
    with pytest.raises(CacheCorrupted, match="too few for rows"):
        store.read(KEY)


def test_incomplete_entry_with_huge_n_rows_lists_cheaply(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
    _edit_meta(store, lambda m: m.update(n_rows=10**15))
    (info,) = store.entries()  # instant: nothing proportional to n_rows
    assert info.problem is None and info.meta.n_shards == 25 * 10**13 and len(info.meta.done_shards()) == 1


@pytest.mark.parametrize("dtype", ["float99", 5, "O", "<f4", None])
def test_bogus_dtype_in_meta_json_is_corruption_not_a_type_error(tmp_path, dtype):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    meta = _edit_meta(store, lambda m: m["arrays"]["tokens"].update(dtype=dtype))
    with pytest.raises(CacheCorrupted, match="malformed meta.json.*dtype") as caught:
        store.read(KEY)
    assert caught.value.path == meta
    assert store.verify(store.path(KEY)).problem is not None


@pytest.mark.parametrize("edit", [
    lambda m: m["arrays"]["tokens"].update(row_shape=[4, -3]),
    lambda m: m["arrays"]["tokens"].update(row_shape=[4, 2.5]),
    lambda m: m.update(n_rows="10"),
    lambda m: m["shards"][0].update(file="../../elsewhere.npy"),
    lambda m: m["shards"].append(dict(m["shards"][0])),
])
def test_malformed_layout_fields_are_corruption(tmp_path, edit):
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    _edit_meta(store, edit)
    with pytest.raises(CacheCorrupted):
        store.read(KEY)


def test_entry_removed_after_opening_says_removed_not_corrupted(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    _fill(store, KEY, data)
    tokens = store.read(KEY)["tokens"]
    np.testing.assert_array_equal(tokens[0:4], data["tokens"][0:4])  # shard 0 is now mapped
    store.remove(store.path(KEY))  # what `scopebench cache clear` does
    np.testing.assert_array_equal(tokens[0:4], data["tokens"][0:4])  # a mapped shard keeps reading
    with pytest.raises(CacheMissing, match="removed while reading") as caught:
        tokens[9]
    assert isinstance(caught.value, KeyError) and not isinstance(caught.value, CacheCorrupted)
    with pytest.raises(CacheMissing, match="no cache entry"):
        store.read(KEY)


def test_entry_removed_while_being_opened_says_removed(tmp_path, monkeypatch):
    """Deterministic interleaving: the clear renames the entry away between meta.json and the shards."""
    store = ActivationStore(tmp_path)
    _fill(store, KEY, _data())
    real_load = EntryMeta.load.__func__

    def load_then_clear(cls, entry_dir, root=None):
        meta = real_load(cls, entry_dir, root)
        store.remove(entry_dir)
        return meta

    monkeypatch.setattr(EntryMeta, "load", classmethod(load_then_clear))
    with pytest.raises(CacheMissing, match="removed while reading"):
        store.read(KEY)


def test_entry_replaced_while_reading_says_removed(tmp_path):
    store, data = ActivationStore(tmp_path), _data()
    _fill(store, KEY, data)
    tokens = store.read(KEY)["tokens"]
    store.remove(store.path(KEY))
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:  # a new extraction starts again
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
    with pytest.raises(CacheMissing, match="removed while reading"):
        tokens[9]


# ---------------------------------------------------------------- shards written by the ranks of a torchrun launch

def test_shards_of_other_ranks_are_adopted_after_their_sha256_is_checked(tmp_path):
    from scopebench.pipeline.cache import ShardWriter

    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:  # rank 0 holds the entry
        ranks = ShardWriter(store.path(KEY), n_rows=10, rows_per_shard=4)
        for index in (0, 1, 2):
            start, stop = ranks.shard_range(index)
            ranks.write_shard(index, {name: a[start:stop] for name, a in data.items()})
        assert writer.missing_shards() == [0, 1, 2]  # written, not listed yet
        _flip_byte(_shard_file(store, index=1))  # e.g. a writer racing it after the record was written
        problems = writer.adopt_shards()
        assert len(problems) == 1 and "00001.record.json" in problems[0] and "sha256" in problems[0]
        assert writer.missing_shards() == [1]  # refused: to be written again
        assert not list((store.path(KEY) / "shards").glob("*.record.json"))
        writer.write_shard(1, {name: a[4:8] for name, a in data.items()})
        writer.finish()
    entry = store.read(KEY)
    for name, array in data.items():
        np.testing.assert_array_equal(entry[name][:], array)


def test_a_dead_launchs_shards_are_resumed_by_the_next_writer(tmp_path):
    from scopebench.pipeline.cache import ShardWriter

    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4):
        ShardWriter(store.path(KEY), n_rows=10, rows_per_shard=4).write_shard(2, {n: a[8:10] for n, a in data.items()})
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:  # the launch died before rank 0 adopted them
        assert writer.missing_shards() == [0, 1]


def test_a_record_of_another_layout_is_refused(tmp_path):
    from scopebench.pipeline.cache import ShardWriter

    store, data = ActivationStore(tmp_path), _data()
    with store.writer(KEY, n_rows=10, rows_per_shard=4) as writer:
        writer.write_shard(0, {name: a[0:4] for name, a in data.items()})
        ShardWriter(store.path(KEY), n_rows=10, rows_per_shard=4).write_shard(
            1, {"tokens": data["tokens"][4:8, :2], "prefix": data["prefix"][4:8]})  # rows of another shape
        problems = writer.adopt_shards()
    assert len(problems) == 1 and "differ from the entry's" in problems[0] and writer.missing_shards() == [1, 2]
