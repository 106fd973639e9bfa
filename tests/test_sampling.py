"""Magnitude classes, balanced drawing, two-scale patches, the chunked stream."""

import numpy as np
import pytest
import torch

from regnet.config import SamplingConfig
from regnet.intensity import normalize
from regnet.sampling.classes import NO_CLASS, draw_balanced_centres, voxel_classes
from regnet.sampling.patches import centre_targets, extract_patches
from regnet.sampling.stream import augment


def test_class_rules_by_hand():
    dvf = np.array([[0.5, 0.2, 1.0], [2.0, 0.1, 0.0], [2.0, 3.0, 2.5], [9.0, 0, 0],
                    [5.0, 5.0, 7.9]])
    assert voxel_classes(dvf, (1.5, 4, 8), "maxnorm").tolist() == [0, 1, 1, NO_CLASS, 2]
    # the seed's rule: mixed small and large components get no class
    assert voxel_classes(dvf, (1.5, 4, 8), "seed").tolist() == [0, NO_CLASS, 1, NO_CLASS, 2]


def test_drawn_class_fractions_match_requested():
    rng = np.random.default_rng(0)
    shape = (40, 50, 60)
    dvf = np.zeros(shape + (3,), np.float32)
    n = dvf[..., 0].size
    flat = dvf.reshape(n, 3)
    flat[rng.choice(n, n // 10, replace=False), 0] = 2.5  # ~10 % class 1
    rare = rng.choice(np.flatnonzero(flat[:, 0] == 0), 25, replace=False)
    flat[rare, 1] = 6.0  # 25 voxels of class 2 (0.02 %)
    classes = voxel_classes(dvf, (1.5, 4, 8))
    centres, labels = draw_balanced_centres(classes, 0, 1000, rng)
    counts = np.bincount(labels, minlength=3)
    assert counts.tolist() == [1000, 1000, 25]  # the rare class gives all it has
    assert np.all(classes[tuple(centres.T)] == labels)
    centres, labels = draw_balanced_centres(classes, 5, 300, rng)
    assert centres.min() >= 5 and np.all(centres < np.array(shape) - 5)


def test_patches_two_scales_and_target():
    moving = np.arange(60 * 61 * 62, dtype=np.float32).reshape(60, 61, 62)
    fixed = -moving
    centres = np.array([[30, 30, 31], [27, 28, 29]])
    full = extract_patches(moving, fixed, centres, 14)
    low = extract_patches(moving, fixed, centres, 26, stride=2)
    assert full.shape == (2, 2, 29, 29, 29) and low.shape == (2, 2, 27, 27, 27)
    assert full[0, 0, 14, 14, 14] == moving[30, 30, 31] and full[0, 1, 0, 0, 0] == fixed[16, 16, 17]
    assert low[1, 0, 13, 13, 13] == moving[27, 28, 29] and low[1, 0, 0, 0, 1] == moving[1, 2, 5]
    dvf = np.random.default_rng(1).normal(size=(60, 61, 62, 3)).astype(np.float32)
    np.testing.assert_array_equal(centre_targets(dvf, centres)[1], dvf[27, 28, 29])


@pytest.mark.parametrize("dim", [2, 3])
def test_flips_and_permutations_move_the_target_with_the_patches(dim):
    """fixed(x) = moving(x + u) with an integer u (1 mm voxels); after any flip/permutation
    the augmented pair must still satisfy it with the augmented target."""
    rng = np.random.default_rng(dim)
    moving = rng.normal(size=(40,) * dim).astype(np.float32)
    u_xyz = np.array([3, -2, 1][:dim])  # voxels = mm
    u_axes = u_xyz[::-1]
    fixed = np.roll(moving, tuple(-u_axes), axis=tuple(range(dim)))  # fixed(x) = moving(x+u)
    centre = np.array([[20] * dim])
    full = extract_patches(moving, fixed, centre, 6).repeat(12, 0)
    target = np.tile(u_xyz.astype(np.float32), (12, 1))
    flips = rng.random((12, dim)) < 0.5
    perms = np.argsort(rng.random((12, dim)), axis=1)
    perms[0] = np.arange(dim)[::-1]  # a transposition is certainly among them
    augment(full, None, target, flips, perms)
    for k in range(12):
        shift = target[k, ::-1].astype(int)  # array-axis order
        c = np.array([6] * dim)
        window = tuple(slice(a - 2, a + 3) for a in c)
        moved = tuple(slice(a - 2 + s, a + 3 + s) for a, s in zip(c, shift, strict=True))
        np.testing.assert_array_equal(full[k, 1][window], full[k, 0][moved])
    assert sorted(np.abs(target[0]).tolist()) == sorted(np.abs(u_xyz).tolist())


def test_stream_batches_do_not_depend_on_worker_count(dataset_2d):
    from torch.utils.data import DataLoader

    from regnet.sampling.stream import PatchStream, read_manifests
    from tests.helpers import config_2d

    config = config_2d()
    pairs = read_manifests([dataset_2d])
    batches = {}
    for workers in (0, 2):
        stream = PatchStream(pairs, config.sampling, 8, seed=3, start_step=5,
                             augment_flips=True, augment_permute=True,
                             augment_intensity={"bias_max": 0.3, "blur_max_vox": 1.0})
        loader = iter(DataLoader(stream, batch_size=None, num_workers=workers))
        batches[workers] = [next(loader) for _ in range(6)]
        del loader
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a.full, b.full) and torch.equal(a.target, b.target)


def test_normalization():
    assert normalize(np.array([-1000.0, 3095.0]), "ct").tolist() == [0.0, 1.0]
    values = normalize(np.linspace(0, 100, 1001), "robust")
    assert values[10] == pytest.approx(0.0, abs=1e-6) and values[990] == pytest.approx(1.0)


@pytest.mark.parametrize("bad, message", [
    ({"classBalanced": (1.5, 1.0, 8.0)}, "increasing"),
    ({"K": 20}, "at least the patch reach"),
    ({"Ry": 1}, "Ry must be 0"),
    ({"Resolution": "triple"}, "Resolution"),
])
def test_bad_sampling_settings(bad, message):
    from regnet.errors import RegNetError

    with pytest.raises(RegNetError, match=message):
        SamplingConfig(**bad).validate()


def test_random_contrast_is_monotone_and_one_mapping_per_image():
    from regnet.intensity import random_contrast

    x = np.linspace(-0.2, 0.6, 200).astype(np.float32)
    low = x[::2].copy()
    for seed in range(20):
        full_out, low_out = random_contrast([x, low], np.random.default_rng(seed),
                                            noise_max=0.0)
        assert np.all(np.diff(full_out) >= -1e-6)  # order of intensities kept
        assert np.allclose(low_out, full_out[::2], atol=1e-6)  # the same mapping for both
        assert full_out.min() >= x.min() - 1e-6 and full_out.max() <= x.max() + 1e-6
    changed = random_contrast([x], np.random.default_rng(1))[0]
    assert np.abs(changed - x).max() > 0.01


def test_bias_field_and_blur_agree_between_the_two_scales():
    """A constant image under a bias field: the half-resolution patch (stride 2, the same
    centre) sees the same factor at the same place; blur smooths a step but keeps its order."""
    from regnet.intensity import random_contrast

    full = np.full((9, 9, 9), 0.5, np.float32)
    full[0, 0, 0], full[-1, -1, -1] = 0.0, 1.0  # corners that set the range
    low = full.copy()
    mapped_full, mapped_low = random_contrast([full, low], np.random.default_rng(3),
                                              noise_max=0.0, strides=[1, 2], bias_max=0.3)
    assert mapped_full.std() > 1e-3  # the bias field varies over the patch
    # full index 4 + 2j is low index 4 + j: the same physical point
    assert np.allclose(mapped_low[3:6, 3:6, 3:6], mapped_full[2:7:2, 2:7:2, 2:7:2], atol=1e-6)
    step = np.repeat(np.array([0.0] * 10 + [1.0] * 10, np.float32)[None], 3, axis=0)
    blurred = random_contrast([step], np.random.default_rng(0), noise_max=0.0,
                              blur_max_vox=2.0)[0]
    assert 0.0 < blurred[1, 9] < blurred[1, 10] < 1.0  # the edge is softened, still rising
    assert np.all(np.diff(blurred[1]) >= -1e-6)


def test_slab_blur_softens_one_axis_only():
    """Thick slices: a point is spread along one axis and no other, along the same axis for a
    half-resolution patch centred on the same point (at half the sigma, so it may stay put)."""
    from regnet.intensity import random_contrast

    full = np.zeros((9, 9, 9), np.float32)
    full[4, 4, 4] = 1.0
    low = np.zeros((5, 5, 5), np.float32)
    low[2, 2, 2] = 1.0

    def spread(out, c):  # voxels that changed along the lines through the point, per axis
        lines = [out[:, c, c], out[c, :, c], out[c, c, :]]
        return [int((np.abs(line - out[0, 0, 0]) > 1e-4).sum()) - 1 for line in lines]

    axes = []
    for seed in range(8):
        out_full, out_low = random_contrast([full, low], np.random.default_rng(seed),
                                            noise_max=0.0, strides=[1, 2],
                                            slab_blur_max_vox=4.0)
        s_full, s_low = spread(out_full, 4), spread(out_low, 2)
        assert sum(n > 0 for n in s_full) <= 1, s_full  # a sigma near 0 spreads nothing
        if max(s_full) > 0:
            axes.append(int(np.argmax(s_full)))
            assert all(n == 0 for k, n in enumerate(s_low) if k != axes[-1]), (s_full, s_low)
    assert len(axes) >= 5 and len(set(axes)) > 1  # the axis is drawn


def test_intensity_augmentation_leaves_the_label(dataset_2d):
    from regnet.sampling.stream import cut_batch, load_pair, read_manifests

    config = SamplingConfig(K=26, normalization="robust")
    pair = load_pair(read_manifests([dataset_2d])[0], config)
    centres = np.array([[40, 45], [30, 50]])
    plain = cut_batch([pair], np.zeros(2, int), centres, np.zeros(2), config)
    seeds = np.array([[1, 2], [3, 4]])
    varied = cut_batch([pair], np.zeros(2, int), centres, np.zeros(2), config, contrast=seeds)
    assert torch.equal(plain.target, varied.target)
    assert not torch.allclose(plain.full, varied.full)
    again = cut_batch([pair], np.zeros(2, int), centres, np.zeros(2), config, contrast=seeds)
    assert torch.equal(varied.full, again.full) and torch.equal(varied.low, again.low)
