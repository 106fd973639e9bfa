"""The seed's Figure 1 network, and dense prediction equal to per-patch prediction."""

import numpy as np
import pytest
import torch
from torch import nn

from regnet.config import NetworkConfig
from regnet.errors import RegNetError
from regnet.inference.dense import predict_dense
from regnet.network import build_network
from regnet.network.regnet import RegNet, concatenated_inputs, count_parameters, narrowed_state
from regnet.sampling.patches import extract_patches


def conv_widths(module):
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv3d)]


def test_figure1_layers_and_parameter_count():
    net = RegNet(dim=3, multi=True)
    assert conv_widths(net.full_paths.moving) == [16, 16, 16]
    assert conv_widths(net.low_paths.fixed) == [16, 16, 16]
    assert conv_widths(net.full_merge) == [25, 30]
    assert conv_widths(net.low_merge) == [25, 25, 25, 30, 30, 30]
    assert conv_widths(net.head) == [60, 70, 75, 150]
    assert conv_widths(net.fc) == [150] and net.fc[0].kernel_size == (1, 1, 1)
    assert net.out.out_channels == 3 and net.out.kernel_size == (1, 1, 1)
    assert all(m.padding == (0, 0, 0) for m in net.modules() if isinstance(m, nn.Conv3d))
    assert count_parameters(net) == 903_961
    out = net.eval()(torch.zeros(2, 2, 29, 29, 29), torch.zeros(2, 2, 27, 27, 27))
    assert out.shape == (2, 3, 1, 1, 1)


def test_variants_and_registry():
    single = build_network(NetworkConfig(name="regnet_single"))
    assert single.eval()(torch.zeros(1, 2, 29, 29, 29)).shape == (1, 3, 1, 1, 1)
    net2d = build_network(NetworkConfig(dim=2))
    assert net2d.eval()(torch.zeros(3, 2, 29, 29), torch.zeros(3, 2, 27, 27)).shape == (3, 2, 1, 1)
    with pytest.raises(RegNetError, match="unknown network"):
        build_network(NetworkConfig(name="transmorph"))


@pytest.mark.parametrize("dim, multi", [(2, True), (3, True), (2, False)])
def test_dense_prediction_equals_per_patch_prediction(dim, multi):
    torch.manual_seed(0)
    net = RegNet(dim=dim, multi=multi, width=0.25).eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    shape = (9, 11, 10)[:dim] if dim == 3 else (13, 10)
    moving = rng.normal(size=shape).astype(np.float32)
    fixed = rng.normal(size=shape).astype(np.float32)
    dense = predict_dense(net, moving, fixed, torch.device("cpu"), multi=multi, tile=3,
                          phases="all")
    reach = 26 if multi else 14
    pad = [(reach, reach)] * dim
    mp, fp = np.pad(moving, pad, mode="edge"), np.pad(fixed, pad, mode="edge")
    centres = np.array([(1,) * dim, tuple(n - 1 for n in shape), (4, 5, 6)[:dim]])
    with torch.no_grad():
        full = torch.from_numpy(extract_patches(mp, fp, centres + reach, 14))
        low = torch.from_numpy(extract_patches(mp, fp, centres + reach, 26, 2)) if multi else None
        expected = net(full, low).flatten(1).numpy()
    np.testing.assert_allclose(dense[tuple(centres.T)], expected, atol=1e-4)
    # one phase + linear interpolation equals the exact prediction on the even lattice
    coarse = predict_dense(net, moving, fixed, torch.device("cpu"), multi=multi, tile=4)
    even = tuple(slice(0, None, 2) for _ in range(dim))
    np.testing.assert_allclose(coarse[even], dense[even], atol=1e-4)
    # every second of those centres (4 voxels apart; the head's last 3x3 convolution strides),
    # tiles of an odd size rounded to start on that lattice, and linear interpolation between
    sparse = predict_dense(net, moving, fixed, torch.device("cpu"), multi=multi, tile=3,
                           phases="sparse")
    every4 = tuple(slice(0, None, 4) for _ in range(dim))
    np.testing.assert_allclose(sparse[every4], dense[every4], atol=1e-4)
    origin, four, two = ((0,) * dim, (4,) + (0,) * (dim - 1), (2,) + (0,) * (dim - 1))
    np.testing.assert_allclose(sparse[two], (dense[origin] + dense[four]) / 2, atol=1e-4)


@pytest.mark.parametrize("name", ["regnet_multi", "unet"])
def test_batchnorm_folded_into_the_convolutions_keeps_the_outputs(name):
    """Inference folds each BatchNorm into the convolution before it: no BatchNorm is left and
    the outputs stay those of the eval-mode network (running statistics made non-trivial)."""
    import copy

    from regnet.inference.models import fold_batchnorm

    torch.manual_seed(0)
    net = build_network(NetworkConfig(name=name, dim=3))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    with torch.no_grad():
        if name == "unet":
            inputs = (torch.randn(1, 2, 32, 32, 32),)
        else:
            inputs = (torch.randn(1, 2, 33, 33, 33), torch.randn(1, 2, 29, 29, 29))
        expected, got = net(*inputs), folded(*inputs)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9, 10), (1, 4, 5, 6)])
def test_inference_max_pooling_equals_torchs(shape):
    """The eval-mode pooling (strided maxima, no indices) gives max_pool's exact values, odd
    lengths included (their last voxel is dropped), in 3D and 2D; by hand on one block."""
    from regnet.network.regnet import max_pool2

    x = torch.randn(shape)
    pool = torch.nn.functional.max_pool3d if len(shape) == 5 else torch.nn.functional.max_pool2d
    assert torch.equal(max_pool2(x), pool(x, 2, 2))
    block = x[0, 0, :2, :2] if len(shape) == 4 else x[0, 0, :2, :2, :2]
    assert max_pool2(x)[(0, 0) + (0,) * (len(shape) - 2)] == block.max()


@pytest.mark.parametrize("multi", [True, False])
def test_a_narrowed_network_computes_what_the_wide_one_did(multi):
    """A wide RegNet whose extra channels are silent (zero weights into and out of them, zero
    normalisation scale and shift) computes what its kept channels compute: the network
    narrowed from it (width 0.5) gives the same outputs, and the kept weights exactly."""
    torch.manual_seed(0)
    narrow = RegNet(2, multi, 0.5).eval()
    for module in narrow.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    wide = RegNet(2, multi, 1.0).eval()
    wide_state = {k: torch.zeros_like(v) for k, v in wide.state_dict().items()}
    for key, small in narrow.state_dict().items():
        big = wide_state[key]
        if key.endswith("running_var"):
            big.fill_(1.0)
        if small.dim() == 0:
            big.copy_(small)
            continue
        pieces = concatenated_inputs(multi).get(key, 1)
        rows = torch.arange(small.shape[0])
        if small.dim() == 1:
            big[rows] = small
            continue
        piece, wide_piece = small.shape[1] // pieces, big.shape[1] // pieces
        cols = torch.cat([torch.arange(k * wide_piece, k * wide_piece + piece)
                          for k in range(pieces)])
        big[rows[:, None], cols] = small
    wide.load_state_dict(wide_state)
    full, low = torch.randn(3, 2, 29, 29), torch.randn(3, 2, 27, 27)
    with torch.no_grad():
        assert torch.allclose(wide(full, low if multi else None),
                              narrow(full, low if multi else None), atol=1e-5)
    again = RegNet(2, multi, 0.5).eval()
    again.load_state_dict(narrowed_state(wide, again))
    for key, value in narrow.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
