"""Shifted Context Crop: the overlap shows identical pixels in content coordinates."""
import pytest
import torch

from scopebench.pipeline.scc import overlap_index, scc, square_resize, square_resize_map


def _patches(view: torch.Tensor, n: int) -> torch.Tensor:
    """[3, p*n, p*n] -> [p*p, 3*n*n] row-major patches, computed independently of scc()."""
    c, h, w = view.shape
    p = h // n
    return view.reshape(c, p, n, p, n).permute(1, 3, 0, 2, 4).reshape(p * p, c * n * n)


@pytest.mark.parametrize("patch_size,grid_side", [(4, 8), (8, 14), (14, 7), (16, 9)])
@pytest.mark.parametrize("shift", [1, 2, 3, 4, 5, 6])
def test_overlap_pixels_identical(patch_size, grid_side, shift):
    if shift >= grid_side:
        pytest.skip("shift must be smaller than the grid")
    image = torch.rand(3, 97, 131, generator=torch.Generator().manual_seed(shift))
    pair = scc(image, shift, patch_size=patch_size, grid_side=grid_side)
    side = grid_side * patch_size
    assert pair.view_a.shape == pair.view_b.shape == (3, side, side)
    pa, pb = _patches(pair.view_a, patch_size), _patches(pair.view_b, patch_size)
    assert torch.equal(pa[pair.overlap.in_a], pb[pair.overlap.in_b])
    assert pair.overlap.side == grid_side - shift
    assert len(pair.overlap.in_a) == (grid_side - shift) ** 2


def test_overlap_index_content_coordinates_by_hand():
    ov = overlap_index(grid_side=4, shift=1)
    # content cell (0,0) is A's patch (1,1) = 5 and B's patch (0,0) = 0; cell (2,2) is A 15, B 10
    assert ov.in_a.tolist() == [5, 6, 7, 9, 10, 11, 13, 14, 15]
    assert ov.in_b.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_non_overlap_patches_differ():
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    pair = scc(image, 1, patch_size=8, grid_side=7)
    pa, pb = _patches(pair.view_a, 8), _patches(pair.view_b, 8)
    # same grid position, different content: the views really are shifted
    assert not torch.equal(pa[pair.overlap.in_b], pb[pair.overlap.in_b])


def test_batched_equals_single():
    images = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(1))
    batched = scc(images, 2, patch_size=5, grid_side=6)
    single = scc(images[1], 2, patch_size=5, grid_side=6)
    assert torch.allclose(batched.view_b[1], single.view_b)


def test_square_resize_is_identity_at_size():
    image = torch.rand(3, 32, 32)
    assert torch.equal(square_resize(image, 32), image)


@pytest.mark.parametrize("shift", [0, 7, -1])
def test_bad_shift_is_explained(shift):
    with pytest.raises(ValueError, match="shift"):
        scc(torch.rand(3, 32, 32), shift, patch_size=4, grid_side=7)


def test_bad_image_shape_is_explained():
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        scc(torch.rand(32, 32), 1, patch_size=4, grid_side=7)


def test_square_resize_map_crops_like_the_images_and_keeps_values():
    # 6 x 10 map: the centred square is columns 2..7; halving it keeps the pixel under each
    # output cell's centre (source position 2i + 1), i.e. every other pixel starting at the second
    target = torch.arange(60, dtype=torch.float32).reshape(6, 10) * 0.5 + 3.0
    out = square_resize_map(target, 3)
    torch.testing.assert_close(out, target[1::2, 3:8:2])
    assert out.max() > 1.0  # depth and labels are not clamped like pixel values
    labels = torch.tensor([[7, 7, -1, -1], [7, 7, -1, -1], [250, 250, 2, 2], [250, 250, 2, 2]])
    assert square_resize_map(labels, 2).tolist() == [[7, -1], [250, 2]]
    assert square_resize_map(labels, 2).dtype == labels.dtype
    images = torch.rand(3, 6, 10)
    torch.testing.assert_close(square_resize(images, 6), images[:, :, 2:8])  # same crop as the images
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        square_resize_map(torch.zeros(1, 4, 4), 2)


@pytest.mark.parametrize("source, size", [(112, 28), (480, 224), (683, 224), (10, 7)])
def test_square_resize_map_samples_under_each_output_pixel_centre(source: int, size: int):
    """Each output pixel must show the source pixel its centre falls in, as the centre-aligned image resize does."""
    column = torch.arange(source, dtype=torch.float64).expand(source, source)  # value = source column index
    out = square_resize_map(column, size)[0]
    centre = (torch.arange(size, dtype=torch.float64) + 0.5) * source / size  # in source pixel units
    assert ((out <= centre) & (centre < out + 1)).all(), (out, centre)
