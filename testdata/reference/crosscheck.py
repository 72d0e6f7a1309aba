"""Run the PyTorch reference on a case written by the Go side and dump results.

Usage:
    /usr/bin/python3 testdata/reference/crosscheck.py DIR

DIR must contain
    config.json           {"widths": [...], "block_depth": 2, "lr": float,
                           "ema_decay": float, "steps": int}
    weights.safetensors   full initial state dict (params + BN buffers;
                          num_batches_tracked as I64 scalars)
    batches.safetensors   x.{s} [N,4,H,W], noise_variance.{s} [N], eps.{s} [N,3,H,W]
                          for s in 0..steps-1 (all F32)

and receives DIR/torch.safetensors with
    train.out, train.loss        live net, train mode, step 0 (before any update)
    grad.<param>                 gradients after step 0's backward
    loss.{s}                     loss of every step
    final.<key>, ema.<key>       full state dicts of the live and EMA nets at the end
    eval.out, eval_live.out      EMA / live net in eval mode on batch 0 at the end
    sample.out                   only if DIR/sample.safetensors exists (gray
                                 [N,1,H,W], noise [N,3,H,W], steps I64 [1]):
                                 DDIM with the final EMA net from that noise

Errors (bad config, state dict that does not load strictly, missing or
mistyped batch tensors) are printed to stderr and exit with status 1.
"""

import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402
import unet  # noqa: E402


class CrossCheckError(Exception):
    pass


def read_config(path):
    with open(path) as f:
        cfg = json.load(f)
    missing = [k for k in ("widths", "block_depth", "lr", "ema_decay", "steps") if k not in cfg]
    if missing:
        raise CrossCheckError(f"{path}: missing keys {missing}")
    if int(cfg["steps"]) < 1:
        raise CrossCheckError(f"{path}: steps must be >= 1")
    return cfg


def read_batches(path, steps):
    arrays = safetensors_np.load(path)
    batches = []
    for s in range(steps):
        batch = []
        for name in ("x", "noise_variance", "eps"):
            key = f"{name}.{s}"
            if key not in arrays:
                raise CrossCheckError(f"{path}: missing tensor {key!r}")
            arr = arrays[key]
            if arr.dtype != np.float32:
                raise CrossCheckError(f"{path}: {key} has dtype {arr.dtype}, want float32")
            batch.append(torch.from_numpy(arr))
        x, nv, eps = batch
        n = x.shape[0]
        if x.dim() != 4 or x.shape[1] != 4 or tuple(nv.shape) != (n,) or \
                tuple(eps.shape) != (n, 3, x.shape[2], x.shape[3]):
            raise CrossCheckError(
                f"{path}: step {s}: inconsistent shapes x {list(x.shape)}, "
                f"noise_variance {list(nv.shape)}, eps {list(eps.shape)}")
        batches.append((x, nv, eps))
    return batches


def to_np(t):
    return t.detach().cpu().numpy().copy()


def run(case_dir):
    cfg = read_config(os.path.join(case_dir, "config.json"))
    steps = int(cfg["steps"])
    lr = float(cfg["lr"])
    decay = float(cfg["ema_decay"])

    net = unet.UNet(widths=cfg["widths"], block_depth=int(cfg["block_depth"]))
    try:
        unet.load_state_dict(net, os.path.join(case_dir, "weights.safetensors"), strict=True)
    except Exception as e:  # noqa: BLE001 - report any load failure verbatim
        raise CrossCheckError(f"loading weights.safetensors: {e}") from e
    batches = read_batches(os.path.join(case_dir, "batches.safetensors"), steps)

    ema = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    params = dict(net.named_parameters())
    ema_params = dict(ema.named_parameters())
    ema_buffers = dict(ema.named_buffers())

    out = {}
    net.train()
    for s, (x, nv, eps) in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        pred = net(x, nv)
        loss = F.mse_loss(pred, eps)
        loss.backward()
        if s == 0:
            out["train.out"] = to_np(pred)
            out["train.loss"] = to_np(loss)
            for name, p in params.items():
                if p.grad is None:
                    raise CrossCheckError(f"parameter {name} received no gradient")
                out[f"grad.{name}"] = to_np(p.grad)
        out[f"loss.{s}"] = to_np(loss)
        opt.step()

        # EMA of the parameters; BN buffers are copied from the live net.
        with torch.no_grad():
            for name, p in params.items():
                e = ema_params[name]
                e.copy_(decay * e + (1 - decay) * p)
            for name, b in net.named_buffers():
                ema_buffers[name].copy_(b)

    for k, v in net.state_dict().items():
        out[f"final.{k}"] = to_np(v)
    for k, v in ema.state_dict().items():
        out[f"ema.{k}"] = to_np(v)

    x0, nv0, _ = batches[0]
    with torch.no_grad():
        ema.eval()
        out["eval.out"] = to_np(ema(x0, nv0))
        net.eval()
        out["eval_live.out"] = to_np(net(x0, nv0))

    # Optional DDIM run of the final EMA net from given starting noise.
    sample_path = os.path.join(case_dir, "sample.safetensors")
    if os.path.exists(sample_path):
        st = safetensors_np.load(sample_path)
        for key in ("gray", "noise", "steps"):
            if key not in st:
                raise CrossCheckError(f"{sample_path}: missing tensor {key}")
        gray = torch.from_numpy(np.ascontiguousarray(st["gray"], dtype=np.float32))
        noise = torch.from_numpy(np.ascontiguousarray(st["noise"], dtype=np.float32))
        sample_steps = int(np.asarray(st["steps"]).reshape(-1)[0])
        out["sample.out"] = to_np(unet.ddim_sample(ema, gray, sample_steps, x_init=noise))

    dst = os.path.join(case_dir, "torch.safetensors")
    safetensors_np.save(dst, out, {"torch": torch.__version__})
    losses = ", ".join(f"{float(out[f'loss.{s}']):.6g}" for s in range(steps))
    print(f"wrote {dst} ({len(out)} tensors); losses: {losses}")


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float32)
    try:
        run(argv[1])
    except (CrossCheckError, OSError, ValueError, json.JSONDecodeError) as e:
        print(f"crosscheck: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
