"""The dense networks (U-Net, cost volume), their training crops, multi-stage configs and model
files."""

import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from regnet.cli import main
from regnet.config import NetworkConfig, config_from_dict, load_config
from regnet.errors import RegNetError, UsageError
from regnet.inference.dense import mirror_sets, predict_field
from regnet.inference.models import load_model
from regnet.inference.stages import stage_plan
from regnet.network.checkpoint import load_checkpoint, save_checkpoint, save_multistage
from regnet.network.corrnet import (
    FULL_SHARPNESS_UNIT,
    CorrNet,
    CostVolume,
    block_cost_volume,
    warp_features,
)
from regnet.network.registry import dense_crop
from regnet.network.unet import UNet, predict_whole, upsample
from regnet.sampling.crops import crop_box, cut_crops, flip_permute_field
from regnet.sampling.stream import LoadedPair, load_pair
from regnet.training.trainer import train
from tests.helpers import config_2d


def test_unet_shapes_and_zero_start():
    net = UNet(dim=3, width=0.5)
    pair = torch.randn(2, 2, 32, 48, 16)
    half = net(pair)
    assert half.shape == (2, 3, 16, 24, 8)
    assert net.dense(pair).shape == (2, 3, 32, 48, 16)
    assert half.abs().max() < 0.5  # the output layer starts near the zero field (mm)
    net2 = UNet(dim=2)
    assert net2.dense(torch.randn(1, 2, 32, 16)).shape == (1, 2, 32, 16)


def test_upsample_keeps_constants_and_ramps_half_voxel_centred():
    half = torch.full((1, 3, 4, 4, 4), 2.5)
    assert torch.allclose(upsample(half, (8, 8, 8)), torch.full((1, 3, 8, 8, 8), 2.5))
    # a ramp sampled at block centres 0.5, 2.5, 4.5, ... comes back as the ramp x at inner voxels
    ramp = (2 * torch.arange(4.0) + 0.5).view(1, 1, 1, 1, 4).expand(1, 1, 4, 4, 4)
    up = upsample(ramp.contiguous(), (8, 8, 8))[0, 0, 0, 0]
    assert torch.allclose(up[1:7], torch.arange(1.0, 7.0))


def test_predict_whole_pads_odd_shapes_and_is_translation_consistent():
    net = UNet(dim=3, width=0.25)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
        net.out.weight.zero_()
    moving = np.random.default_rng(0).random((19, 23, 17)).astype(np.float32)
    out = predict_whole(net, moving, moving, "cpu")
    assert out.shape == (19, 23, 17, 3)
    assert np.allclose(out, [1.0, -2.0, 0.5], atol=1e-6)


class PointwiseNet(torch.nn.Module):
    """A dense 'network' whose field at a voxel depends on that voxel alone: (x, y, z) =
    (moving - 2 fixed, 3 moving, fixed)."""

    def dense(self, pair):
        m, f = pair[:, 0], pair[:, 1]
        return torch.stack([m - 2 * f, 3 * m, f], 1)

    def eval(self):
        return self


class MeanNet(PointwiseNet):
    """A dense 'network' that, like instance normalisation, depends on its input's extent:
    every component is the mean of the moving image over the input it was given."""

    def dense(self, pair):
        mean = pair[:, 0].mean(dim=(1, 2, 3))
        return mean.view(-1, 1, 1, 1, 1).expand(-1, 3, *pair.shape[2:])


def test_predict_whole_in_crops_equals_one_pass_where_a_voxel_depends_on_itself_alone():
    rng = np.random.default_rng(3)
    moving, fixed = rng.random((2, 40, 23, 37)).astype(np.float32)
    one = predict_whole(PointwiseNet(), moving, fixed, "cpu")
    assert np.allclose(one[..., 0], moving - 2 * fixed, atol=1e-6)
    # every voxel covered, the tents' weights normalised: the same field to 1e-4 mm
    in_crops = predict_whole(PointwiseNet(), moving, fixed, "cpu", crop=16)
    assert np.abs(in_crops - one).max() < 1e-4


def test_predict_whole_in_crops_gives_each_crop_its_own_statistics():
    # x < 32 is 0, x >= 32 is 1; crops of 32 along x start at 0, 16 and 32 (means 0, 0.5, 1)
    moving = np.zeros((8, 8, 64), np.float32)
    moving[..., 32:] = 1
    assert np.allclose(predict_whole(MeanNet(), moving, moving, "cpu"), 0.5)
    field = predict_whole(MeanNet(), moving, moving, "cpu", crop=32)[0, 0, :, 0]
    assert np.allclose(field[:16], 0) and np.allclose(field[48:], 1)  # one crop each
    # x = 16: the first crop's tent is 16 there, the second's 1: (16 * 0 + 1 * 0.5) / 17
    assert field[16] == pytest.approx(0.5 / 17)
    # x = 31: the first crop's tent is 1, the second's 16: (1 * 0 + 16 * 0.5) / 17
    assert field[31] == pytest.approx(8 / 17)


def test_dense_crop_is_the_training_crop_where_normalisation_depends_on_the_input():
    assert dense_crop(NetworkConfig(name="corrnet", crop=48, norm="instance")) == 48
    assert dense_crop(NetworkConfig(name="unet", crop=64, norm="group")) == 64
    assert dense_crop(NetworkConfig(name="unet", crop=64, norm="batch")) is None
    assert dense_crop(NetworkConfig(name="corrnet", crop=64, norm="none")) is None
    assert dense_crop(NetworkConfig(name="regnet_multi", norm="instance")) is None


class GradientNet(torch.nn.Module):
    """A dense 'network' that mirroring cannot fool: component x, y, z of its field is the
    moving image's central difference along x, y, z (edges replicated), times 1, 2, 3."""

    def dense(self, pair):
        m = torch.nn.functional.pad(pair[:, :1], (1,) * 6, mode="replicate")[0, 0]
        dz = m[2:, 1:-1, 1:-1] - m[:-2, 1:-1, 1:-1]
        dy = m[1:-1, 2:, 1:-1] - m[1:-1, :-2, 1:-1]
        dx = m[1:-1, 1:-1, 2:] - m[1:-1, 1:-1, :-2]
        return torch.stack([dx, 2 * dy, 3 * dz])[None]

    def eval(self):
        return self


@pytest.mark.parametrize("flips", [2, 4, 8])
def test_mirrored_passes_map_back_with_negated_components(flips):
    # a mirror-equivariant estimator gives the same field from every mirrored pass, so the
    # average equals one pass: a wrong axis or sign would change it
    moving = np.random.default_rng(1).random((16, 20, 12)).astype(np.float32)
    one = predict_field(GradientNet(), "unet", moving, moving, "cpu")
    assert np.abs(one).max() > 0.5
    assert np.allclose(predict_field(GradientNet(), "unet", moving, moving, "cpu", flips=flips),
                       one, atol=1e-5)
    # a constant field is not mirror-equivariant: the mirrored passes cancel it
    constant = UNet(dim=3, width=0.25)
    with torch.no_grad():
        constant.out.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
        constant.out.weight.zero_()
    assert np.allclose(predict_field(constant, "unet", moving, moving, "cpu", flips=flips), 0,
                       atol=1e-6)
    assert len(mirror_sets(3, flips)) == flips


def test_mirror_sets_refuse_counts_that_are_not_a_group():
    assert mirror_sets(3, 4) == [(), (0, 1), (0, 2), (1, 2)]
    assert mirror_sets(2, 4) == [(), (0,), (1,), (0, 1)]
    with pytest.raises(ValueError, match="choose one of"):
        mirror_sets(2, 8)


def test_crop_box_shifts_inside_and_pads_short_axes():
    box, pad = crop_box((2, 50, 30), (40, 60, 20), 32)
    assert box == (slice(0, 32), slice(28, 60), slice(0, 20))
    assert pad == [(0, 0), (0, 0), (6, 6)]


@pytest.mark.parametrize("flips,perm", [((True, False, False), None),
                                         ((False, True, True), (2, 0, 1)),
                                         (None, (1, 2, 0))])
def test_flips_and_permutations_keep_the_label(flips, perm):
    """A moving image shifted by u = (1, 2, 3) voxels (x, y, z) at 1 mm: after any flip or
    permutation of images and field, fixed(p) = moving(p + u'(p)) still holds."""
    rng = np.random.default_rng(1)
    moving = rng.random((20, 20, 20)).astype(np.float32)
    u_xyz = np.array([1, 2, 3])
    fixed = np.zeros_like(moving)
    fixed[:-3, :-2, :-1] = moving[3:, 2:, 1:]
    field = np.broadcast_to(u_xyz.reshape(3, 1, 1, 1), (3, 20, 20, 20)).astype(np.float32)
    images, field2 = flip_permute_field(np.stack([moving, fixed]), field,
                                        None if flips is None else np.array(flips), perm)
    m2, f2 = images
    u2 = field2[:, 10, 10, 10].round().astype(int)  # constant: (x, y, z) voxels
    assert np.allclose(field2, u2.reshape(3, 1, 1, 1))
    step = u2[::-1]  # array-axis order
    core = tuple(slice(4, 16) for _ in range(3))
    shifted = tuple(slice(4 + s, 16 + s) for s in step)
    assert np.array_equal(f2[core], m2[shifted])


def test_cut_crops_weights_padding():
    shape = (10, 40, 40)
    pair = LoadedPair(np.ones(shape, np.float32), np.ones(shape, np.float32),
                      np.zeros(shape + (3,), np.float32), np.zeros(shape, np.int8))
    batch = cut_crops([pair], np.array([0]), np.array([[5, 20, 20]]), np.array([0]), 32)
    assert batch.pair.shape == (1, 2, 32, 32, 32) and batch.target.shape == (1, 3, 32, 32, 32)
    assert batch.weight.sum() == 10 * 32 * 32  # only the 10 real slices weigh


def dense_config_2d(**training):
    values = config_2d(**training).to_dict()
    values["network"] = {"name": "unet", "dim": 2, "width": 0.5, "crop": 48}
    values["sampling"].update({"K": 4, "R": 4, "Rlow": 4, "Resolution": "single"})
    values["training"].update({"batch_size": 4, "lr": 3e-3})
    return config_from_dict(values)


def test_cost_volume_finds_where_the_fixed_feature_sits_in_the_moving_image():
    """fixed(x) = moving(x + u): a feature at p in the fixed image and at p + (1, -2) (array
    axes) in the moving one peaks at that offset; the expected offset of a sharp softmax is
    (x, y) = (-2, 1) quarter cells, 4 * 2 mm each."""
    net = CorrNet(dim=2, radius=2)
    fixed, moving = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    fixed[0, 0, 3, 4] = moving[0, 0, 4, 2] = 1.0
    cost = net.cost_volume(fixed, moving)
    assert cost.shape == (1, 25, 8, 8)
    best = net.offsets[cost[0, :, 3, 4].argmax()]
    assert best.tolist() == [1.0, -2.0]
    weights = torch.softmax(cost[0, :, 3, 4] * 100, 0)
    offset = (weights[:, None] * net.offsets).sum(0).flip(0) * 4 * 2.0
    assert torch.allclose(offset, torch.tensor([-16.0, 8.0]), atol=1e-3)


@pytest.mark.parametrize("dim", [2, 3])
def test_cost_volume_and_its_gradients_equal_the_products_written_out(dim):
    """Every offset's cost is the channel dot product of fixed(x) and moving(x + o), zero
    where x + o leaves the grid, and the hand-written backward agrees with autograd through
    those products (float64, a 5x4(x3) grid, radius 1)."""
    gen = torch.Generator().manual_seed(0)
    shape = (2, 3, 5, 4, 3)[:2 + dim]
    fixed = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    moving = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    cost = CostVolume.apply(fixed, moving, 1)
    assert cost.shape == (2, 3**dim, *shape[2:])
    # offset (1, -1(, 0)) at x = (0, 1(, 2)) reads moving at (1, 0(, 2))
    k = list(itertools.product(range(-1, 2), repeat=dim)).index((1, -1, 0)[:dim])
    at, there = (0, 1, 2)[:dim], (1, 0, 2)[:dim]
    expected = (fixed[(0, slice(None), *at)] * moving[(0, slice(None), *there)]).sum()
    assert torch.isclose(cost[(0, k, *at)], expected)
    assert (cost[(0, k, *(shape[2] - 1, 1, 2)[:dim])] == 0).all()  # x + o leaves the grid
    assert torch.autograd.gradcheck(lambda f, m: CostVolume.apply(f, m, 1), (fixed, moving))


@pytest.mark.parametrize("dim, shape, radius", [(3, (7, 5, 6), 2), (2, (9, 6), 3)])
def test_block_cost_volume_equals_one_product_per_offset(dim, shape, radius):
    """The block matrix products give every offset's product of the fixed and the shifted
    moving features, on a grid whose sides are not multiples of the block, zero beyond it;
    in float32 under bf16 autocast too."""
    gen = torch.Generator().manual_seed(1)
    fixed, moving = (torch.randn(2, 5, *shape, generator=gen) for _ in range(2))
    padded = F.pad(moving, [radius] * (2 * dim))
    costs = []
    for offset in itertools.product(range(-radius, radius + 1), repeat=dim):
        window = [slice(radius + o, radius + o + n) for o, n in zip(offset, shape, strict=True)]
        costs.append((fixed * padded[(slice(None), slice(None), *window)]).sum(1))
    expected = torch.stack(costs, 1)
    assert torch.allclose(block_cost_volume(fixed, moving, radius), expected, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = block_cost_volume(fixed, moving, radius, block=3)
    assert cost.dtype == torch.float32
    assert torch.allclose(cost, expected, atol=1e-5)


def test_warp_features_samples_the_moving_features_at_x_plus_the_field():
    """A feature equal to its x (column) index, shifted by 1.5 voxels in x, reads x + 1.5;
    one equal to its y (row) index, shifted by -1 in y, reads y - 1, and 0 beyond the grid."""
    columns = torch.arange(8.0).repeat(6, 1)[None, None]  # (1, 1, 6, 8): value = x
    field = torch.zeros(1, 2, 6, 8)
    field[:, 0] = 1.5
    assert torch.allclose(warp_features(columns, field)[0, 0, 2, :6],
                          torch.tensor([1.5, 2.5, 3.5, 4.5, 5.5, 6.5]), atol=1e-5)
    rows = torch.arange(6.0)[:, None].repeat(1, 8)[None, None]  # value = y
    field = torch.zeros(1, 2, 6, 8)
    field[:, 1] = -1.0
    assert torch.allclose(warp_features(rows, field)[0, 0, :, 3],
                          torch.tensor([0.0, 0, 1, 2, 3, 4]), atol=1e-5)


@pytest.mark.parametrize("fine_radius,full_width", [(0, 0), (1, 0), (1, 4)])
def test_corrnet_shapes_spacing_and_whole_image_prediction(fine_radius, full_width):
    net = CorrNet(dim=3, width=0.5, fine_radius=fine_radius, full_width=full_width)
    pair = torch.randn(2, 2, 32, 24, 16)
    assert net(pair).shape == ((2, 3, 32, 24, 16) if full_width else (2, 3, 16, 12, 8))
    assert net.dense(pair).shape == (2, 3, 32, 24, 16)
    net.eval()
    with torch.no_grad():
        one = net.dense(pair)
        net.voxel_mm.fill_(2.0)  # the same offsets, twice the mm, refinements aside
        net.refine[-1].weight.zero_()
        if full_width:
            net.refine_full[-1].weight.zero_()
        a = net.dense(pair)
        net.voxel_mm.fill_(1.0)
        b = net.dense(pair)
    assert torch.allclose(a, 2 * b, atol=1e-5) and one.shape == a.shape
    assert CorrNet(dim=2).dense(torch.randn(1, 2, 20, 12)).shape == (1, 2, 20, 12)


def test_the_full_resolution_level_starts_at_the_half_resolution_field():
    """Grown by a full-resolution refinement whose last convolution is zero, a corrnet
    predicts what it predicted without it (the 1/2 field, upsampled); a non-zero one moves
    the field only where it is told: a bias of (0.5, -1) mm is added at every voxel."""
    torch.manual_seed(0)
    half = CorrNet(dim=2, width=0.5, fine_radius=1).eval()
    full = CorrNet(dim=2, width=0.5, fine_radius=1, full_width=4).eval()
    full.load_state_dict(half.state_dict(), strict=False)
    pair = torch.randn(1, 2, 24, 20)
    with torch.no_grad():
        full.refine_full[-1].weight.zero_()
        assert torch.allclose(full.dense(pair), half.dense(pair), atol=1e-6)
        full.refine_full[-1].bias.copy_(torch.tensor([0.5, -1.0]))
        shift = full.dense(pair) - half.dense(pair)
    assert torch.allclose(shift[0, 0], torch.full((24, 20), 0.5), atol=1e-6)
    assert torch.allclose(shift[0, 1], torch.full((24, 20), -1.0), atol=1e-6)


def test_the_full_resolution_cost_volume_starts_at_the_field_it_had_and_learns():
    """Grown by a cost volume on full-resolution voxels, a corrnet predicts what it predicted
    without it (its sharpness starts at 0: a uniform softmax over symmetric offsets, an offset
    of exactly 0); the sharpness gets a gradient, and Adam's first step (the learning rate
    per parameter) moves it by 100 times the learning rate, its unit; a sharpened one moves
    the field by at most ``full_radius`` voxels. It needs ``full_width``."""
    torch.manual_seed(0)
    before = CorrNet(dim=2, width=0.5, fine_radius=1, full_width=4).eval()
    grown = CorrNet(dim=2, width=0.5, fine_radius=1, full_width=4, full_radius=1).eval()
    missing = grown.load_state_dict(before.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["features_full.weight", "full_offsets", "full_sharpness"]
    pair = torch.randn(1, 2, 24, 20)
    with torch.no_grad():
        assert torch.allclose(grown.dense(pair), before.dense(pair), atol=1e-6)
    grown.dense(pair).square().sum().backward()
    assert grown.full_sharpness.grad.abs() > 1e-6
    torch.optim.Adam([grown.full_sharpness], lr=2e-4).step()
    assert abs(grown.full_sharpness.item() * FULL_SHARPNESS_UNIT) == pytest.approx(0.02)
    with torch.no_grad():
        grown.refine_full[-1].weight.zero_()
        before.refine_full[-1].weight.zero_()
        grown.full_sharpness.fill_(50.0 / FULL_SHARPNESS_UNIT)
        shift = grown.dense(pair) - before.dense(pair)  # mm; voxel_mm is 1
    assert shift.abs().max() <= 1.0 + 1e-5 and shift.abs().max() > 0.1
    image = torch.randn(1, 1, 24, 20)
    with torch.no_grad():  # zero-sum filters: the intensity level does not move the features
        assert torch.allclose(grown.full_features(image + 5.0), grown.full_features(image),
                              atol=1e-5)
        assert not torch.allclose(grown.full_features(image.flip(2)), grown.full_features(image),
                                  atol=1e-2)
    with pytest.raises(ValueError, match="needs full_width"):
        CorrNet(dim=2, full_radius=1)
    with pytest.raises(RegNetError, match="full_radius"):
        config_from_dict({"network": {"name": "corrnet", "full_radius": 1}})
    narrow = CorrNet(dim=2, width=0.5, fine_radius=1, full_width=4, full_radius=1,
                     full_match_width=2).eval()
    assert narrow.features_full.weight.shape == (2, 1, 3, 3)  # 2 channels from the image
    narrow_missing = narrow.load_state_dict(before.state_dict(), strict=False).missing_keys
    assert sorted(narrow_missing) == sorted(missing)
    with torch.no_grad():
        assert torch.allclose(narrow.dense(pair), before.dense(pair), atol=1e-6)
    with pytest.raises(RegNetError, match="full_match_width"):
        config_from_dict({"network": {"name": "corrnet", "full_width": 4, "full_radius": 1,
                                      "full_match_width": 33}})


@pytest.mark.parametrize("name,norm,fine_radius,full_width,full_radius", [
    ("unet", "batch", 0, 0, 0), ("unet", "group", 0, 0, 0), ("corrnet", "group", 0, 0, 0),
    ("corrnet", "group", 2, 4, 0), ("corrnet", "instance", 1, 4, 1)])
def test_a_few_steps_on_one_batch_lower_the_dense_loss(dataset_2d, name, norm, fine_radius,
                                                       full_width, full_radius):
    from regnet.sampling.stream import read_manifests

    config = dense_config_2d()
    pairs = read_manifests([dataset_2d])[:2]
    loaded = [load_pair(p, config.sampling) for p in pairs]
    centres = np.array([[s // 2 for s in p.fixed.shape] for p in loaded])
    batch = cut_crops(loaded, np.arange(2), centres, np.zeros(2), 48)
    torch.manual_seed(0)
    net = (UNet(dim=2, width=0.5, norm=norm) if name == "unet" else
           CorrNet(dim=2, width=0.5, norm=norm, fine_radius=fine_radius,
                   full_width=full_width, full_radius=full_radius))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.huber_loss(net.dense(batch.pair), batch.target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("network", [{"name": "unet"},
                                     {"name": "corrnet", "fine_radius": 1, "full_width": 4}])
def test_dense_training_runs_validates_and_resumes(dataset_2d, tmp_path, network):
    """Ten steps in bf16 (group normalisation), then four more after a resume; the
    cost-volume network with every level too (its field at full resolution)."""
    run = tmp_path / "run"
    config = dense_config_2d(steps=10, val_every=10, precision="bf16")
    config = dataclasses.replace(config, network=dataclasses.replace(config.network,
                                                                     norm="group", **network))
    summary = train([dataset_2d], run, config, seed=0)
    assert summary["steps"] == 10 and np.isfinite(summary["validation"]["epe"])
    assert summary["validation"]["epe_identity"] > 0
    state = load_checkpoint(run / "last.pt")
    assert state["val_crop"] == config.network.crop  # group normalisation: in crops
    del state["val_crop"]  # as a checkpoint validated in one pass, with an unbeatable best
    state["best"] = 0.0
    save_checkpoint(run / "last.pt", state)
    resumed = train([dataset_2d], run, config, steps=14, resume=True)
    assert resumed["started_at"] == 10 and resumed["steps"] == 14
    # validated otherwise before: the resumed run's validation at step 14 sets the best
    assert resumed["best_val_epe_mm"] == resumed["validation"]["epe"] > 0
    # the resumed log keeps the validation of the checkpoint's own step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [p.step for p in events.Scalars("val/epe")] == [10, 14]


def test_multistage_config_picks_a_stage(tmp_path):
    (tmp_path / "coarse.yaml").write_text("synthesis: {spacing_mm: 4.0}\n")
    multi = tmp_path / "multi.yaml"
    multi.write_text("stages:\n  - coarse.yaml\n  - {synthesis: {spacing_mm: 2.0}}\n")
    assert load_config(multi, 0).synthesis.spacing_mm == 4.0
    assert load_config(multi, 1).synthesis.spacing_mm == 2.0
    with pytest.raises(UsageError, match="pass --stage K with 0 <= K < 2"):
        load_config(multi)
    with pytest.raises(UsageError, match="no 'stages:' list"):
        load_config(tmp_path / "coarse.yaml", 0)


def stage_checkpoint(path, spacing, name="unet"):
    config = dataclasses.replace(config_2d(), network=dataclasses.replace(
        config_2d().network, name=name))
    net = UNet(dim=2, width=0.5) if name == "unet" else None
    save_checkpoint(path, {"config": config.to_dict(), "model": net.state_dict(),
                           "spacing_mm": spacing})
    return path


def test_multistage_model_file_round_trip_and_plan(tmp_path):
    coarse = stage_checkpoint(tmp_path / "c.pt", 4.0)
    fine = stage_checkpoint(tmp_path / "f.pt", 2.0)
    path = save_multistage(tmp_path / "chain.pt", [coarse, fine])
    loaded = load_model(path, dim=2)
    assert [m.spacing_mm for m in loaded.stages] == [4.0, 2.0]
    assert loaded.spacing_mm == 2.0
    assert [(s, m.spacing_mm) for s, m in stage_plan(loaded)] == [(4.0, 4.0), (2.0, 2.0)]
    assert [s for s, _ in stage_plan(loaded, [2.0])] == [2.0]
    with pytest.raises(UsageError, match=r"has stages at \[4.0, 2.0\] mm only"):
        stage_plan(loaded, [8.0])
    with pytest.raises(RegNetError, match="coarse to fine"):
        save_multistage(tmp_path / "bad.pt", [fine, coarse])
    # the CLI packs the same file
    assert main(["models", "--pack", str(coarse), str(fine), "--out",
                 str(tmp_path / "cli.pt")]) == 0
    assert len(load_model(tmp_path / "cli.pt", dim=2).stages) == 2
    # one network run at 8 mm then at its own 2 mm: the plan and the scale follow
    assert main(["models", "--pack", f"{fine}@8", str(fine), "--out",
                 str(tmp_path / "at.pt")]) == 0
    twice = load_model(tmp_path / "at.pt", dim=2)
    assert [(s, m.spacing_mm) for s, m in stage_plan(twice)] == [(8.0, 2.0), (2.0, 2.0)]
    assert main(["models", "--pack", f"{fine}@x", "--out", str(tmp_path / "x.pt")]) == 2
    # a stage's own smoothing, with or without a spacing
    assert main(["models", "--pack", f"{coarse}@8:smooth=3", f"{fine}:smooth=4", str(fine),
                 "--out", str(tmp_path / "own.pt")]) == 0
    own = load_model(tmp_path / "own.pt", dim=2)
    assert [(m.stage_spacing_mm, m.smooth_vox) for m in own.stages] == [
        (8.0, 3.0), (2.0, 4.0), (2.0, None)]
    assert main(["models", "--pack", f"{fine}:smooth=x", "--out", str(tmp_path / "x.pt")]) == 2
    # a refinement stage may repeat the finest spacing; --stages picks every stage there
    refined = load_model(save_multistage(tmp_path / "r.pt", [coarse, fine, fine]), dim=2)
    assert [s for s, _ in stage_plan(refined)] == [4.0, 2.0, 2.0]
    assert [s for s, _ in stage_plan(refined, [2.0])] == [2.0, 2.0]
    # a preset may leave stages out by index: here the refinement stage
    assert [(s, m.source[-7:]) for s, m in stage_plan(refined, drop=(2,))] == [
        (4.0, "stage 0"), (2.0, "stage 1")]
    with pytest.raises(UsageError, match="one must stay"):
        stage_plan(refined, drop=(0, 1, 2))
    with pytest.raises(UsageError, match=r"stages 0..2"):
        stage_plan(refined, drop=(3,))
    with pytest.raises(UsageError, match="has one stage"):
        stage_plan(load_model(fine, dim=2), drop=(0,))


@pytest.mark.parametrize("fine_radius,full_width", [(0, 0), (2, 4)])
def test_a_loaded_corrnet_stage_predicts_its_direct_forward_pass(tmp_path, fine_radius,
                                                                 full_width):
    """A cost-volume checkpoint keeps its spacing; loaded as a model, its stage prediction is
    ``dense`` of the edge-padded pair, cropped, to 1e-4 mm, and it registers a pair."""
    import SimpleITK as sitk

    from regnet.inference.register import register

    torch.manual_seed(0)
    net = CorrNet(dim=2, width=0.5, fine_radius=fine_radius, full_width=full_width)
    net.voxel_mm.fill_(2.0)
    config = dataclasses.replace(config_2d(), network=dataclasses.replace(
        config_2d().network, name="corrnet", norm="group", width=0.5, fine_radius=fine_radius,
        full_width=full_width))
    path = tmp_path / "corr.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": net.state_dict(),
                           "spacing_mm": 2.0})
    loaded = load_model(path, dim=2).network
    assert float(loaded.voxel_mm) == 2.0
    rng = np.random.default_rng(0)
    moving, fixed = (rng.random((40, 36)).astype(np.float32) for _ in range(2))
    field = predict_field(loaded, "corrnet", moving, fixed, "cpu")
    padded = np.stack([np.pad(a, [(0, 8), (0, 12)], mode="edge") for a in (moving, fixed)])
    with torch.no_grad():
        direct = net.eval().dense(torch.from_numpy(padded[None]))[0, :, :40, :36]
    assert np.abs(field - direct.permute(1, 2, 0).numpy()).max() < 1e-4
    image = sitk.GetImageFromArray(fixed)
    image.SetSpacing((2.0, 2.0))
    result = register(image, image, str(path), device="cpu", precision="fp32")
    assert result.dvf_mm.shape == (40, 36, 2) and np.isfinite(result.dvf_mm).all()


def test_models_lists_the_shipped_models(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("ct_lung_2mm") for line in lines)
    assert any("[default_2d]" in line for line in lines)


def test_residual_composes_back_to_the_truth():
    """r from the fixed-point iteration satisfies u = r + u_prev(x + r) (compose_dvfs)."""
    from scipy.ndimage import gaussian_filter

    from regnet.geometry.compose import compose_dvfs
    from regnet.inference.residuals import residual_field

    rng = np.random.default_rng(0)
    spacing = (1.5, 1.0, 2.0)
    smooth = [gaussian_filter(rng.normal(size=(3, 20, 24, 16)), (0, 4, 4, 4)) for _ in range(2)]
    u_prev = np.moveaxis(smooth[0], 0, -1) * 40  # a few mm, smooth: no folding
    u_true = u_prev + np.moveaxis(smooth[1], 0, -1) * 20
    assert 1.0 < np.abs(u_prev).max() < 6.0
    r = residual_field(u_true, u_prev, spacing)
    assert np.abs(compose_dvfs(u_prev, r, spacing) - u_true)[3:-3, 3:-3, 3:-3].max() < 1e-3
    assert np.abs(r - (u_true - u_prev)).max() > 0.05  # not simply the difference


def test_residuals_command_writes_trainable_pairs(dataset_2d, trained_2d, tmp_path):
    """`regnet residuals`: every pair pre-registered by a model, a manifest that training
    reads, and a rerun that skips finished pairs."""
    from regnet.sampling.stream import check_pair_grids, read_manifests

    run, _ = trained_2d
    out = tmp_path / "residuals"
    args = ["residuals", "--data", str(dataset_2d), "--model", str(run / "best.pt"),
            "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    pairs = read_manifests([out])
    assert len(pairs) == len(read_manifests([dataset_2d]))
    check_pair_grids(pairs)
    mtimes = sorted(p.stat().st_mtime for p in out.rglob("dvf.mha"))
    assert main(args) == 0
    assert sorted(p.stat().st_mtime for p in out.rglob("dvf.mha")) == mtimes
    # --dsmooth keeps the pairs of the named Dsmooth variants only
    with open(dataset_2d / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for k, row in enumerate(rows):  # a manifest whose pairs alternate Dsmooth 0 and 1
        row.update({key: str(dataset_2d / row[key]) for key in ("fixed", "moving", "dvf")},
                   dsmooth=str(k % 2))
    (tmp_path / "mixed").mkdir()
    with open(tmp_path / "mixed" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["residuals", "--data", str(tmp_path / "mixed"), "--model", str(run / "best.pt"),
                 "--out", str(tmp_path / "some"), "--device", "cpu", "--dsmooth", "1"]) == 0
    assert len(read_manifests([tmp_path / "some"])) == len(rows) // 2


def init_from(path, source_config, target_config):
    """Save a network built from ``source_config`` at ``path`` and start one built from
    ``target_config`` from it (``--init``); returns both."""
    from regnet.network import build_network
    from regnet.training.trainer import start_weights

    torch.manual_seed(0)
    source = build_network(source_config.network)
    save_checkpoint(path, {"config": source_config.to_dict(), "model": source.state_dict(),
                           "spacing_mm": 1.0})
    target = build_network(target_config.network)
    start_weights(target, path, target_config)
    return source, target


def test_init_loads_weights_and_refuses_another_network(tmp_path):
    config = config_2d()
    source, target = init_from(tmp_path / "s.pt", config, config)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])
    other = dataclasses.replace(config, network=dataclasses.replace(config.network, width=1.0))
    with pytest.raises(UsageError, match="differs from the config's"):
        init_from(tmp_path / "o.pt", config, other)


def test_init_adds_a_fine_cost_volume_to_a_corrnet_without_one(tmp_path):
    """Every weight of the source is copied, the fine cost volume is added, then the
    full-resolution refinement, then its cost volume on features of their own width; the
    reverse (dropping one), or another width for existing features, is refused."""
    base = dataclasses.replace(config_2d(), network=dataclasses.replace(
        config_2d().network, name="corrnet", norm="group", width=0.5))
    grown = dataclasses.replace(base, network=dataclasses.replace(base.network, fine_radius=1))
    source, target = init_from(tmp_path / "s.pt", base, grown)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])
    assert target.fine_offsets.shape == (9, 2)
    full = dataclasses.replace(grown, network=dataclasses.replace(grown.network, full_width=4))
    source, target = init_from(tmp_path / "f.pt", grown, full)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])
    assert target.refine_full[0][0].weight.shape == (4, 4, 3, 3)  # fixed, warped, x, y
    with pytest.raises(UsageError, match="differs from the config's"):
        init_from(tmp_path / "g.pt", grown, base)
    with pytest.raises(UsageError, match="differs from the config's"):
        init_from(tmp_path / "h.pt", full, grown)
    matched = dataclasses.replace(full, network=dataclasses.replace(
        full.network, full_radius=1, full_match_width=2))
    source, target = init_from(tmp_path / "m.pt", full, matched)
    assert target.features_full.weight.shape == (2, 1, 3, 3)
    as_wide = dataclasses.replace(matched, network=dataclasses.replace(
        matched.network, full_match_width=0))  # the level exists: its width cannot change
    with pytest.raises(UsageError, match="differs from the config's"):
        init_from(tmp_path / "n.pt", as_wide, matched)


def test_shipped_stages_are_referred_to_not_copied(tmp_path):
    """Packing a shipped model stores its name (the file stays small) and loads its weights,
    checksum-verified, from the installation; the shipped ct_multistage is built this way."""
    path = main(["models", "--pack", "ct_lung_2mm@4", "ct_lung_2mm", "--out",
                 str(tmp_path / "ref.pt")])
    assert path == 0 and (tmp_path / "ref.pt").stat().st_size < 10_000
    shipped = load_model("ct_lung_2mm")
    chain = load_model(tmp_path / "ref.pt")
    assert [(s.stage_spacing_mm, s.spacing_mm) for s in chain.stages] == [(4.0, 2.0), (2.0, 2.0)]
    for key, value in shipped.network.state_dict().items():
        assert torch.equal(value, chain.stages[0].network.state_dict()[key])
    assert (load_model("ct_multistage").stages[0].source == shipped.source)


def test_every_shipped_config_loads_and_the_residual_stage_keeps_its_settings():
    folder = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in folder.glob("*.yaml") if p.name != "recipes.yaml")
    assert len(names) >= 20
    for name in names:
        stages = yaml.safe_load((folder / name).read_text()).get("stages")
        for stage in range(len(stages)) if stages else [None]:
            load_config(folder / name, stage)  # validates every section
    residual = load_config(folder / "corrnet_ct_2mm_residual.yaml")
    assert residual.synthesis.deformMethod == residual.sampling.deformMethod == (0, 1, 2, 3)
    assert (residual.network.name, residual.network.norm, residual.network.crop) == (
        "corrnet", "instance", 64)
    assert residual.training.ema_decay == pytest.approx(0.998)
