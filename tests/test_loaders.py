"""Real-dataset loaders on tiny fake trees built with PIL, plus the sampling views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scopebench.data import (ADE20K, DatasetLayoutError, ImageDataset, ImageNet, NYUDepthV2, SyntheticScenes,
                             one_per_class, subset)
from scopebench.data.base import TARGET_FIELDS, read_target


def _same_targets_as_samples(data: ImageDataset) -> None:
    """Every target field read without the image equals the one of the decoded sample (None where absent)."""
    for i in range(len(data)):
        sample = data[i]
        for field in TARGET_FIELDS:
            expected, got = getattr(sample, field), read_target(data, i, field)
            assert (got is None) if expected is None else (
                torch.equal(got, expected) if isinstance(expected, torch.Tensor) else got == expected), (i, field)


def _rgb(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> np.ndarray:
    """Write a random RGB image (PNG for ``.png``, else JPEG) and return the pixels written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return pixels


# -- ImageNet ---------------------------------------------------------------------------

@pytest.fixture()
def imagenet_root(tmp_path: Path) -> Path:
    counts = {"n02": 2, "n01": 3, "n03": 1}  # sorted wnid order: n01 -> 0, n02 -> 1, n03 -> 2
    for k, (wnid, count) in enumerate(counts.items()):
        for i in range(count):
            _rgb(tmp_path / "val" / wnid / f"img{i}.JPEG", seed=10 * k + i)
    return tmp_path


def test_imagenet_labels_follow_sorted_wnids(imagenet_root):
    data = ImageNet(imagenet_root, "val")
    assert isinstance(data, ImageDataset)
    assert data.classes == ["n01", "n02", "n03"] and len(data) == 6
    assert data.labels == [0, 0, 0, 1, 1, 2]
    for i in range(len(data)):
        sample = data[i]
        assert sample.label == data.labels[i]
        assert sample.image.shape == (3, 10, 12) and 0 <= sample.image.min() and sample.image.max() <= 1
    _same_targets_as_samples(data)
    # JPEG is lossy, so compare with PIL's own decoding of the same file
    expected = np.asarray(Image.open(imagenet_root / "val" / "n02" / "img1.JPEG").convert("RGB")) / 255.0
    np.testing.assert_allclose(data[4].image.permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_imagenet_identity_tracks_split_root_and_file_list(imagenet_root, tmp_path):
    data = ImageNet(imagenet_root, "val")
    assert data.identity.startswith("imagenet:val:") and str(imagenet_root.resolve()) in data.identity
    assert ImageNet(imagenet_root, "val").identity == data.identity
    _rgb(imagenet_root / "val" / "n03" / "img9.JPEG", seed=99)
    assert ImageNet(imagenet_root, "val").identity != data.identity


def test_imagenet_val_takes_its_class_indices_from_train(imagenet_root):
    for k, wnid in enumerate(["n01", "n02", "n03", "n04"]):  # train has a class (n04) that val lacks
        _rgb(imagenet_root / "train" / wnid / "a.JPEG", seed=50 + k)
    (imagenet_root / "val" / "n02").rename(imagenet_root / "val" / "n04")  # val: n01, n03, n04
    train, val = ImageNet(imagenet_root, "train"), ImageNet(imagenet_root, "val")
    assert train.classes == val.classes == ["n01", "n02", "n03", "n04"]
    assert val.labels == [0, 0, 0, 2, 3, 3]  # n04 is class 3 in both splits, not 2 as in val's own listing
    assert train.labels == [0, 1, 2, 3]


def test_identity_of_a_tree_linked_in_from_elsewhere(imagenet_root, tmp_path):
    linked = tmp_path / "linked"
    (linked / "val").mkdir(parents=True)
    for wnid in ("n01", "n02", "n03"):
        (linked / "val" / wnid).symlink_to(imagenet_root / "val" / wnid)
    data = ImageNet(linked, "val")
    assert len(data) == 6 and data.labels == [0, 0, 0, 1, 1, 2]
    file_list_hash = data.identity.rsplit(":", 1)[1]
    assert file_list_hash == ImageNet(imagenet_root, "val").identity.rsplit(":", 1)[1]  # same relative file list


def test_imagenet_layout_errors(imagenet_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match="missing ImageNet root") as err:
        ImageNet(tmp_path / "nowhere")
    assert "{train,val}/<wnid>" in str(err.value) and err.value.path == tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match="split folder 'train'"):
        ImageNet(imagenet_root, "train")
    (imagenet_root / "train").mkdir()
    with pytest.raises(DatasetLayoutError, match="no class"):
        ImageNet(imagenet_root, "train")
    (imagenet_root / "train" / "n09").mkdir()
    with pytest.raises(DatasetLayoutError, match="holds no images"):
        ImageNet(imagenet_root, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        ImageNet(imagenet_root, "test")
    with pytest.raises(DatasetLayoutError, match=r"class folders \['n01', 'n02', 'n03'\] are not in the train split"):
        ImageNet(imagenet_root, "val")  # val's wnids have no index in train's class list (only n09)
    (imagenet_root / "train" / "n09").rmdir()
    (imagenet_root / "train").rmdir()
    (imagenet_root / "val" / "n01" / "img0.JPEG").write_bytes(b"not a jpeg")
    data = ImageNet(imagenet_root, "val")
    with pytest.raises(DatasetLayoutError, match="unreadable") as err:
        data[0]
    assert err.value.path.name == "img0.JPEG"


# -- ADE20K -----------------------------------------------------------------------------

def _ade_tree(root: Path, split: str, names: list[str]) -> dict[str, np.ndarray]:
    base = root / "ADEChallengeData2016"
    labels = {}
    for k, name in enumerate(names):
        _rgb(base / "images" / split / f"{name}.jpg", seed=k)
        values = np.random.default_rng(100 + k).integers(0, 151, size=(10, 12), dtype=np.uint8)
        values[0, 0], values[0, 1] = 0, 150
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(values, mode="L").save(base / "annotations" / split / f"{name}.png")
        labels[name] = values
    return labels


def test_ade20k_maps_labels_and_ignore(tmp_path):
    raw = _ade_tree(tmp_path, "validation", ["ADE_val_2", "ADE_val_1"])
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):  # parent or the release folder itself
        data = ADE20K(root, "val")
        assert isinstance(data, ImageDataset) and len(data) == 2
        sample = data[0]  # sorted: ADE_val_1 first
        expected = raw["ADE_val_1"].astype(np.int64) - 1
        assert torch.equal(sample.segmentation, torch.from_numpy(expected))
        assert sample.segmentation[0, 0] == -1 and sample.segmentation[0, 1] == 149
        assert sample.image.shape == (3, 10, 12) and sample.label is None
    _same_targets_as_samples(ADE20K(tmp_path, "val"))
    assert ADE20K(tmp_path, "validation").identity == ADE20K(tmp_path, "val").identity
    assert ADE20K(tmp_path, "val").identity.startswith("ade20k:validation:")


def test_ade20k_layout_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="ADEChallengeData2016 folder"):
        ADE20K(tmp_path)
    _ade_tree(tmp_path, "validation", ["a", "b"])
    with pytest.raises(DatasetLayoutError, match="image folder for split 'train'"):
        ADE20K(tmp_path, "train")
    (tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "b.png").unlink()
    with pytest.raises(DatasetLayoutError, match="b.jpg has no annotation") as err:
        ADE20K(tmp_path, "val")
    assert err.value.path.name == "b.png"
    assert "ADEChallengeData2016/{images,annotations}" in str(err.value)
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(
        tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "b.png")
    with pytest.raises(DatasetLayoutError, match="annotation size"):
        ADE20K(tmp_path, "val")[1]
    with pytest.raises(DatasetLayoutError, match="annotation size"):  # checked without decoding the image too
        read_target(ADE20K(tmp_path, "val"), 1, "segmentation")
    Image.fromarray(np.full((10, 12), 151, np.uint8), mode="L").save(
        tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "b.png")
    with pytest.raises(DatasetLayoutError, match="exceeds 150"):
        ADE20K(tmp_path, "val")[1]
    with pytest.raises(DatasetLayoutError, match="exceeds 150"):
        read_target(ADE20K(tmp_path, "val"), 1, "segmentation")
    (tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetLayoutError, match="unreadable"):
        ADE20K(tmp_path, "val")[1]


# -- NYUd -------------------------------------------------------------------------------

def _nyu_tree(root: Path, split: str, names: list[str]) -> dict[str, np.ndarray]:
    depths = {}
    for k, name in enumerate(names):
        _rgb(root / split / "rgb" / f"{name}.png", seed=k)
        millimetres = np.random.default_rng(200 + k).integers(0, 10_000, size=(10, 12)).astype(np.uint16)
        millimetres[0, 0] = 0
        (root / split / "depth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(millimetres).save(root / split / "depth" / f"{name}.png")
        depths[name] = millimetres
    return depths


def test_nyud_reads_rgb_and_millimetre_depth(tmp_path):
    depths = _nyu_tree(tmp_path, "test", ["0002", "0001"])
    data = NYUDepthV2(tmp_path, "test")
    assert isinstance(data, ImageDataset) and len(data) == 2
    sample = data[1]  # sorted: 0001, 0002
    rgb = np.asarray(Image.open(tmp_path / "test" / "rgb" / "0002.png")) / 255.0
    np.testing.assert_allclose(sample.image.permute(1, 2, 0).numpy(), rgb, atol=1e-6)  # PNG: exact pixels
    np.testing.assert_allclose(sample.depth.numpy(), depths["0002"] / 1000.0, rtol=1e-6)
    assert sample.depth[0, 0] == 0 and sample.depth.max() > 1.0  # metres, 0 = invalid kept
    assert data.identity.startswith("nyud:test:")
    _same_targets_as_samples(data)


def test_nyud_layout_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="split folder 'train'"):
        NYUDepthV2(tmp_path, "train")
    _nyu_tree(tmp_path, "test", ["a", "b"])
    (tmp_path / "test" / "depth" / "a.png").unlink()
    with pytest.raises(DatasetLayoutError, match="a.png has no depth map") as err:
        NYUDepthV2(tmp_path, "test")
    assert "16-bit PNG, depth in millimetres" in str(err.value)
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(tmp_path / "test" / "depth" / "a.png")
    with pytest.raises(DatasetLayoutError, match="PIL mode 'L'"):
        NYUDepthV2(tmp_path, "test")[0]
    with pytest.raises(DatasetLayoutError, match="PIL mode 'L'"):
        read_target(NYUDepthV2(tmp_path, "test"), 0, "depth")
    (tmp_path / "test" / "rgb" / "b.png").write_bytes(b"garbage")
    with pytest.raises(DatasetLayoutError, match="unreadable"):
        NYUDepthV2(tmp_path, "test")[1]
    with pytest.raises(DatasetLayoutError, match="unreadable"):  # the image's header is read for its size
        read_target(NYUDepthV2(tmp_path, "test"), 1, "depth")
    empty = tmp_path / "empty"
    (empty / "test" / "rgb").mkdir(parents=True)
    (empty / "test" / "depth").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        NYUDepthV2(empty, "test")


# -- sampling ---------------------------------------------------------------------------

def test_subset_keeps_order_and_derives_identity(monkeypatch):
    data = SyntheticScenes(10, image_size=32, seed=1)
    part = subset(data, np.array([7, 2, 2]))
    assert len(part) == 3 and isinstance(part, ImageDataset)
    assert torch.equal(part[0].image, data[7].image) and torch.equal(part[2].image, data[2].image)
    assert part.labels == [data.labels[i] for i in (7, 2, 2)]
    _same_targets_as_samples(part)
    # a subset reads its parent's targets without rendering (probe targets cost no image)
    with monkeypatch.context() as patch:
        patch.setattr(SyntheticScenes, "__getitem__", lambda self, i: pytest.fail("rendered a scene for a target"))
        assert read_target(part, 0, "label") == data.labels[7]
        assert read_target(part, 1, "depth").shape == (32, 32)
    assert part.identity.startswith(data.identity + "|")
    assert subset(data, [7, 2, 2]).identity == part.identity
    assert subset(data, [2, 7, 2]).identity != part.identity
    with pytest.raises(IndexError, match="out of range"):
        subset(data, [10])


def test_one_per_class_picks_distinct_classes_deterministically(imagenet_root):
    data = ImageNet(imagenet_root, "val")
    every = one_per_class(data, 3, seed=0)
    assert [data.labels[i] for i in every.indices] == [0, 1, 2]
    assert every.labels == [0, 1, 2]
    assert one_per_class(data, 3, seed=0).indices == every.indices
    # across seeds the chosen image of class 0 (3 images) varies
    picks = {one_per_class(data, 3, seed=s).indices[0] for s in range(12)}
    assert picks <= {0, 1, 2} and len(picks) > 1
    two = one_per_class(data, 2, seed=4)
    assert len(set(two.labels)) == 2 and two.identity != every.identity
    assert "one_per_class(n=2,seed=4)" in two.identity
    with pytest.raises(ValueError, match="3 classes"):
        one_per_class(data, 4, seed=0)


def test_one_per_class_reads_labels_when_none_are_cheap():
    scenes = SyntheticScenes(8, image_size=32, seed=2)

    class NoCheapLabels:  # same content, labels only through __getitem__
        identity = scenes.identity

        def __len__(self):
            return len(scenes)

        def __getitem__(self, i):
            return scenes[i]

    picked = one_per_class(NoCheapLabels(), 2, seed=0)
    assert len({scenes.labels[i] for i in picked.indices}) == 2
    _same_targets_as_samples(NoCheapLabels())  # no target(): read_target falls back to the whole sample
    with pytest.raises(ValueError, match="unknown target field 'mask'"):
        read_target(NoCheapLabels(), 0, "mask")


def test_one_per_class_rejects_unlabelled_datasets(tmp_path):
    _ade_tree(tmp_path, "validation", ["a"])
    with pytest.raises(ValueError, match="needs image-level labels"):
        one_per_class(ADE20K(tmp_path, "val"), 1, seed=0)
