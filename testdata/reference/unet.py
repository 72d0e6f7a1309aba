"""PyTorch reference of tinct's conditional DDIM colorizer U-Net.

This mirrors the Keras "Denoising Diffusion Implicit Models" example, made
conditional: the network sees 3 noisy color channels plus 1 gray channel and
predicts the noise in the color channels.

Run this file directly for a self-test:

    /usr/bin/python3 testdata/reference/unet.py
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

DEFAULT_WIDTHS = (32, 64, 96, 128)
DEFAULT_BLOCK_DEPTH = 2

EMBEDDING_DIMS = 32
EMBEDDING_MIN_FREQ = 1.0
EMBEDDING_MAX_FREQ = 1000.0

# Offset cosine schedule.
MAX_SIGNAL_RATE = 0.95
MIN_SIGNAL_RATE = 0.02
T = 1000  # number of discrete diffusion times for the DDIM sampler


# ---------------------------------------------------------------------------
# Noise-variance embedding


def embedding_angular_speeds():
    """Return the 16 angular speeds 2*pi*f as a float32 tensor.

    f = exp(linspace(ln 1, ln 1000, 16)); the product 2*pi*f is formed in
    float64 and rounded once to float32.
    """
    n = EMBEDDING_DIMS // 2
    freqs = np.exp(np.linspace(math.log(EMBEDDING_MIN_FREQ), math.log(EMBEDDING_MAX_FREQ), n))
    return torch.from_numpy((2.0 * math.pi * freqs).astype(np.float32))


def sinusoidal_embedding(noise_variance, height, width):
    """Embed noise_variance [N] into [N, 32, H, W].

    Channels 0..15 are sin(2*pi*f*v), channels 16..31 are cos(2*pi*f*v); the
    per-image vector is broadcast (nearest upsampling of a 1x1 map) over H x W.
    The product (2*pi*f) * v is computed in float32.
    """
    speeds = embedding_angular_speeds().to(noise_variance.device)
    angles = noise_variance.to(torch.float32).reshape(-1, 1) * speeds.reshape(1, -1)  # [N, 16]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # [N, 32]
    return emb.reshape(emb.shape[0], EMBEDDING_DIMS, 1, 1).expand(-1, -1, height, width)


# ---------------------------------------------------------------------------
# Network


class ResidualBlock(nn.Module):
    """norm -> conv3x3 -> SiLU -> conv3x3, plus a (1x1-projected) residual."""

    def __init__(self, in_ch, width):
        super().__init__()
        if in_ch != width:
            self.skip = nn.Conv2d(in_ch, width, kernel_size=1, bias=True)
        else:
            self.skip = None  # identity residual; no `skip.*` keys in the state dict
        self.norm = nn.BatchNorm2d(in_ch, affine=False)  # eps 1e-5, momentum 0.1
        self.conv1 = nn.Conv2d(in_ch, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, x):
        residual = x if self.skip is None else self.skip(x)
        h = self.norm(x)
        h = self.conv1(h)
        h = F.silu(h)
        h = self.conv2(h)
        return h + residual


class DownBlock(nn.Module):
    def __init__(self, in_ch, width, depth):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualBlock(in_ch if i == 0 else width, width) for i in range(depth))

    def forward(self, x, skips):
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        return F.avg_pool2d(x, 2)


class UpBlock(nn.Module):
    def __init__(self, in_ch, width, depth):
        super().__init__()
        # Block 0 sees the upsampled input plus one skip of `width` channels;
        # later blocks see their predecessor's output plus one skip.
        self.blocks = nn.ModuleList(
            ResidualBlock((in_ch if i == 0 else width) + width, width) for i in range(depth))

    def forward(self, x, skips):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        for block in self.blocks:
            x = torch.cat([x, skips.pop()], dim=1)
            x = block(x)
        return x


class UNet(nn.Module):
    """Conditional noise-prediction U-Net.

    forward(x [N,4,H,W], noise_variance [N]) -> predicted noise [N,3,H,W].
    H and W must be divisible by 2**(len(widths)-1).
    """

    def __init__(self, widths=DEFAULT_WIDTHS, block_depth=DEFAULT_BLOCK_DEPTH):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError("need at least two widths")
        self.widths = widths
        self.block_depth = int(block_depth)

        self.stem = nn.Conv2d(4, widths[0], kernel_size=1)
        c = widths[0] + EMBEDDING_DIMS
        self.downs = nn.ModuleList()
        for w in widths[:-1]:
            self.downs.append(DownBlock(c, w, block_depth))
            c = w
        self.mids = nn.ModuleList(
            ResidualBlock(c if i == 0 else widths[-1], widths[-1]) for i in range(block_depth))
        c = widths[-1]
        self.ups = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(UpBlock(c, w, block_depth))
            c = w
        self.head = nn.Conv2d(widths[0], 3, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, noise_variance):
        n, _, h, w = x.shape
        emb = sinusoidal_embedding(noise_variance, h, w)
        x = torch.cat([self.stem(x), emb], dim=1)
        skips = []
        for down in self.downs:
            x = down(x, skips)
        for mid in self.mids:
            x = mid(x)
        for up in self.ups:
            x = up(x, skips)
        return self.head(x)


def param_count(net):
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------
# Schedule and sampler


def diffusion_schedule(t):
    """Offset cosine schedule: return (noise_rate, signal_rate) for t in [0, 1].

    Works on Python floats (float64 math) and on tensors.
    """
    start = math.acos(MAX_SIGNAL_RATE)
    end = math.acos(MIN_SIGNAL_RATE)
    if torch.is_tensor(t):
        angle = start + t * (end - start)
        return torch.sin(angle), torch.cos(angle)
    angle = start + t * (end - start)
    return math.sin(angle), math.cos(angle)


def ddim_times(steps):
    """Integer times round(linspace(T-1, 0, steps)), rounding halves to even
    as numpy and torch round do (steps=3 gives 999, 500, 0)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return [int(v) for v in np.rint(np.linspace(T - 1, 0, steps))]


@torch.no_grad()
def ddim_sample(net, gray, steps, generator=None, x_init=None):
    """Deterministic DDIM (eta = 0) colorization of gray [N,1,H,W] -> [N,3,H,W].

    The network runs in eval mode (the previous mode is restored afterwards).
    Rates are computed in float64 and rounded to float32 when used. The
    starting noise is x_init when given, else drawn from generator.
    """
    n, _, h, w = gray.shape
    if x_init is not None:
        x = x_init.clone()
    else:
        x = torch.randn(n, 3, h, w, generator=generator, dtype=torch.float32).to(gray.device)
    rates = [diffusion_schedule(i / T) for i in ddim_times(steps)]
    was_training = net.training
    net.eval()
    try:
        for k, (noise, signal) in enumerate(rates):
            nv = torch.full((n,), noise * noise, dtype=torch.float32, device=gray.device)
            eps_hat = net(torch.cat([x, gray], dim=1), nv)
            x0_hat = (x - noise * eps_hat) / signal
            if k == len(rates) - 1:
                return x0_hat
            next_noise, next_signal = rates[k + 1]
            x = next_signal * x0_hat + next_noise * eps_hat
    finally:
        net.train(was_training)


# ---------------------------------------------------------------------------
# State dict <-> safetensors


def state_dict_numpy(net, prefix=""):
    """Full state dict (params and BN buffers) as {prefix+key: np.ndarray}.

    num_batches_tracked stays int64 with shape [].
    """
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def save_state_dict(net, path, metadata=None):
    safetensors_np.save(path, state_dict_numpy(net), metadata)


def load_state_dict(net, path, strict=True):
    """Load a safetensors state dict into net.

    Besides the name/shape checks of torch's load_state_dict(strict=...), the
    dtype of every tensor must match the module's (F32 params/stats, I64
    num_batches_tracked); torch would otherwise cast silently.
    """
    arrays = safetensors_np.load(path)
    expected = net.state_dict()
    bad = []
    for k, arr in arrays.items():
        if k in expected:
            want = expected[k].dtype
            got = torch.from_numpy(np.zeros((), dtype=arr.dtype)).dtype
            if got != want:
                bad.append(f"{k}: dtype {got}, expected {want}")
    if bad and strict:
        raise RuntimeError("dtype mismatch in state dict:\n\t" + "\n\t".join(bad))
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return net.load_state_dict(state, strict=strict)


# ---------------------------------------------------------------------------
# Self-test


def _self_test():
    import tempfile

    torch.manual_seed(0)
    torch.set_num_threads(2)

    net = UNet()
    n = param_count(net)
    print(f"param count: {n}")
    assert n == 1_950_659, f"param count {n} != 1950659"

    sd = net.state_dict()
    print(f"state dict: {len(sd)} entries")
    for k in sorted(sd):
        print(f"  {k} {list(sd[k].shape)} {str(sd[k].dtype).replace('torch.', '')}")
    assert not any("emb" in k for k in sd), "embedding must not be in the state dict"
    assert "downs.0.blocks.0.skip.weight" in sd and "downs.0.blocks.1.skip.weight" not in sd
    assert sd["downs.0.blocks.0.norm.num_batches_tracked"].dtype == torch.int64
    assert sd["downs.0.blocks.0.norm.num_batches_tracked"].shape == ()

    # Small forward in both modes; with the zero head the output is exactly 0.
    x = torch.randn(2, 4, 16, 16)
    nv = torch.rand(2)
    out = net(x, nv)
    assert out.shape == (2, 3, 16, 16) and float(out.abs().max()) == 0.0
    with torch.no_grad():
        nn.init.normal_(net.head.weight, std=0.1)
    net.eval()
    with torch.no_grad():
        out = net(x, nv)
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    print(f"forward ok: out[0,0,0,:4] = {out[0, 0, 0, :4].tolist()}")

    # Embedding layout: sin block first, then cos; constant over H x W.
    emb = sinusoidal_embedding(torch.tensor([0.25]), 2, 3)
    speeds = embedding_angular_speeds()
    assert torch.allclose(emb[0, :16, 1, 2], torch.sin(0.25 * speeds))
    assert torch.allclose(emb[0, 16:, 0, 0], torch.cos(0.25 * speeds))

    # DDIM sampler smoke test.
    g = torch.Generator().manual_seed(1)
    img = ddim_sample(net, torch.rand(1, 1, 16, 16) * 2 - 1, 3, g)
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()
    assert ddim_times(20)[0] == 999 and ddim_times(20)[-1] == 0
    assert ddim_times(7)[1] == 832 and ddim_times(3) == [999, 500, 0]  # halves to even
    print("ddim ok")

    with tempfile.TemporaryDirectory() as d:
        # Raw safetensors round-trip, including an I64 scalar and metadata.
        p = os.path.join(d, "t.safetensors")
        data = {
            "a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.array(7, dtype=np.int64),
            "c": np.array([1.5, -2.0], dtype=np.float64),
            "d": np.array([[3]], dtype=np.int32),
            "e": np.zeros((0, 4), dtype=np.float32),
        }
        safetensors_np.save(p, data, {"k": "v"})
        back, meta = safetensors_np.load_with_metadata(p)
        assert meta == {"k": "v"}
        for k, v in data.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
            assert np.array_equal(back[k], v), k
        with open(p, "rb") as f:
            hlen = int.from_bytes(f.read(8), "little")
        assert hlen % 8 == 0

        # State dict round-trip through safetensors.
        net.train()
        net(x, nv)  # bump BN statistics so buffers are non-trivial
        p = os.path.join(d, "w.safetensors")
        save_state_dict(net, p)
        raw = safetensors_np.load(p)
        assert raw["mids.0.norm.num_batches_tracked"].shape == ()
        assert raw["mids.0.norm.num_batches_tracked"].dtype == np.int64
        assert int(raw["mids.0.norm.num_batches_tracked"]) == 2
        net2 = UNet()
        load_state_dict(net2, p, strict=True)
        for k, v in net.state_dict().items():
            assert torch.equal(v, net2.state_dict()[k]), k
    print("safetensors round-trip ok")
    print("self-test passed")


if __name__ == "__main__":
    _self_test()
