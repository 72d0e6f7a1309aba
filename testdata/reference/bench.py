"""PyTorch speed reference for `tinct bench ...` (same shapes, default widths).

Usage:
    /usr/bin/python3 testdata/reference/bench.py train    --size S --batch B [--steps K]
    /usr/bin/python3 testdata/reference/bench.py forward  --size S [--batch B] [--calls K]
    /usr/bin/python3 testdata/reference/bench.py colorize --size S [--steps 20] [--samples 1] [--images K]
    (every command also takes --threads N, default 2, --seed N, and
    --device cpu|cuda[:N] with --precision tf32|fp32: PyTorch eager on a GPU)

Each command runs one untimed warm-up iteration, times K iterations and prints
the median as its last line:
    train     ms_per_step=<float>   full step: random batch, forward, MSE,
                                    backward, Adam, EMA update
    forward   ms_per_call=<float>   eval-mode net call under torch.no_grad
    colorize  ms_per_image=<float>  full DDIM colorization of one gray image
                                    (--samples colorings of it, batched)
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet  # noqa: E402


DEVICE = torch.device("cpu")


def sync():
    """Wait for the GPU's queued work (a no-op on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, iters):
    """Run fn once untimed, then `iters` timed times; return per-call ms list."""
    fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def report(name, times):
    print(f"{name}: n={len(times)} min={min(times):.3f} max={max(times):.3f} ms")
    print(f"{name}={statistics.median(times):.3f}")


def bench_train(args, net):
    ema = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
    decay = 0.999
    params = list(net.parameters())
    ema_params = list(ema.parameters())
    ema_buffers = list(ema.buffers())
    b, s = args.batch, args.size
    net.train()

    def step():
        # Random batch: colors and gray in [-1, 1], t ~ U[0, 1], Gaussian noise.
        color = torch.rand(b, 3, s, s, device=DEVICE) * 2 - 1
        gray = torch.rand(b, 1, s, s, device=DEVICE) * 2 - 1
        noise_rate, signal_rate = unet.diffusion_schedule(torch.rand(b, device=DEVICE))
        eps = torch.randn(b, 3, s, s, device=DEVICE)
        noisy = signal_rate.view(b, 1, 1, 1) * color + noise_rate.view(b, 1, 1, 1) * eps
        x = torch.cat([noisy, gray], dim=1)

        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(x, noise_rate * noise_rate), eps)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema_params, params):
                e.copy_(decay * e + (1 - decay) * p)
            for e, bb in zip(ema_buffers, net.buffers()):
                e.copy_(bb)

    times = timed(step, args.steps)
    if DEVICE.type == "cuda":
        print(f"peak_device_mib={torch.cuda.max_memory_allocated(DEVICE) / 2**20:.0f}")
    report("ms_per_step", times)


def bench_forward(args, net):
    net.eval()
    b, s = args.batch, args.size
    x = torch.rand(b, 4, s, s, device=DEVICE) * 2 - 1
    nv = torch.rand(b, device=DEVICE)

    def call():
        with torch.no_grad():
            net(x, nv)

    report("ms_per_call", timed(call, args.calls))


def bench_colorize(args, net):
    s = args.size
    gen = torch.Generator().manual_seed(args.seed)

    def image():
        gray = (torch.rand(1, 1, s, s, generator=gen) * 2 - 1).expand(args.samples, -1, -1, -1)
        x = torch.randn(args.samples, 3, s, s, generator=gen)
        # no autograd: tinct's sampler keeps nothing for a backward pass
        with torch.no_grad():
            unet.ddim_sample(net, gray.contiguous().to(DEVICE), args.steps, x_init=x.to(DEVICE))

    report("ms_per_image", timed(image, args.images))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--size", type=int, required=True, help="image side in pixels")
        p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N: PyTorch eager on that GPU")
        p.add_argument("--precision", default="tf32", choices=["tf32", "fp32"],
                       help="on a GPU: TF32 or full fp32 products in convolutions and matmuls")

    p = sub.add_parser("train", help="time full training steps")
    common(p)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up)")

    p = sub.add_parser("forward", help="time eval-mode network calls")
    common(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=5, help="timed calls (after 1 warm-up)")

    p = sub.add_parser("colorize", help="time full DDIM colorizations")
    common(p)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--samples", type=int, default=1, help="colorings per image (batched)")
    p.add_argument("--images", type=int, default=3, help="timed images (after 1 warm-up)")

    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if DEVICE.type == "cuda":
        tf32 = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    net = unet.UNet()
    # The real head starts at zero; randomize it so the timed work is realistic.
    with torch.no_grad():
        torch.nn.init.normal_(net.head.weight, std=0.05)
    net = net.to(DEVICE)
    extra = ""
    if DEVICE.type == "cuda":
        extra = f", {torch.cuda.get_device_name(DEVICE)}"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"params {unet.param_count(net)}, args {vars(args)}{extra}")
    {"train": bench_train, "forward": bench_forward, "colorize": bench_colorize}[args.cmd](args, net)


if __name__ == "__main__":
    main()
