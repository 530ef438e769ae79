"""Golden values for dtml_loss, made with PyTorch (CPU) in float64 and float32.

Run: /work/torchenv/bin/python data-fixtures/loss/make_loss_fixtures.py
Writes loss_golden.safetensors beside this script. The losses are written
the way the DTC/DTML reference code computes them (`dice_loss` and
`dice_loss1` of that code family's utils/losses.py, F.binary_cross_entropy_with_logits,
torch.sigmoid(-1500 * d), F.l1_loss, F.mse_loss, mean squared difference).
Inputs are drawn once in float64 from a fixed seed; the float32 set is their
cast, and every loss and gradient is recomputed in float32 from it (not cast
from the float64 results). Keys are "<dtype>.<name>", dtype "f64" or "f32".

Inputs (shape (2, 1, 4, 5, 6) = (N, C, Z, Y, X)):
  logits  segmentation logits, N(0, 4^2), some set to +-30 and some to 0
  y       binary label
  p       probabilities in (0, 1)
  q       a second probability map (consistency)
  d       SDM values: near 0 (|k d| up to ~5), exactly 0, +-1, and uniform
  t       SDM target in [-1, 1], equal to d at a few voxels (L1 ties)
  r       random cotangent for the elementwise mask transform
Outputs: "<case>.value" (0-d for losses) and "<case>.grad_<input>".
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

K = 1500.0
SHAPE = (2, 1, 4, 5, 6)

torch.set_num_threads(1)
g = torch.Generator().manual_seed(20240607)


def dice_loss(score, target):
    # DTC utils/losses.py `dice_loss` (squared denominators), without its
    # `target = target.float()` so that the float64 run stays float64.
    smooth = 1e-5
    intersect = torch.sum(score * target)
    y_sum = torch.sum(target * target)
    z_sum = torch.sum(score * score)
    loss = (2 * intersect + smooth) / (z_sum + y_sum + smooth)
    loss = 1 - loss
    return loss


def dice_loss1(score, target):
    # DTC utils/losses.py `dice_loss1` (linear denominators), same change.
    smooth = 1e-5
    intersect = torch.sum(score * target)
    y_sum = torch.sum(target)
    z_sum = torch.sum(score)
    loss = (2 * intersect + smooth) / (z_sum + y_sum + smooth)
    loss = 1 - loss
    return loss


def rand(*shape):
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def randn(*shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


n = 1
for s in SHAPE:
    n *= s

logits = randn(n) * 4.0
idx = torch.randperm(n, generator=g)
logits[idx[0:10]] = 30.0
logits[idx[10:20]] = -30.0
logits[idx[20:24]] = 0.0
logits[idx[24:28]] = 29.5
logits[idx[28:32]] = -29.5

y = (rand(n) < 0.4).to(torch.float64)
p = rand(n) * 0.98 + 0.01
q = rand(n)

d = rand(n) * 2.0 - 1.0
idx = torch.randperm(n, generator=g)
d[idx[0:60]] = (rand(60) * 2.0 - 1.0) * 3e-3  # |k d| < 4.5: the sigmoid's slope
d[idx[60:70]] = (rand(10) * 2.0 - 1.0) * 2e-2  # |k d| < 30
d[idx[70:74]] = 0.0
d[idx[74:80]] = 1.0
d[idx[80:86]] = -1.0
t = rand(n) * 2.0 - 1.0
t[idx[90:96]] = d[idx[90:96]]  # exact ties: L1 subgradient 0 there
t[idx[70:72]] = 0.0  # ties at d = 0 as well
r = randn(n)

inputs64 = {k: v.reshape(SHAPE).contiguous() for k, v in
            dict(logits=logits, y=y, p=p, q=q, d=d, t=t, r=r).items()}


def run(dtype, tag):
    out = {}
    x = {k: v.to(dtype) for k, v in inputs64.items()}
    for k, v in x.items():
        out[f"{tag}.{k}"] = v.contiguous()

    def leaf(name):
        return x[name].clone().requires_grad_(True)

    def record(case, value, **leaves):
        out[f"{tag}.{case}.value"] = value.detach().contiguous()
        grads = torch.autograd.grad(value, list(leaves.values()))
        for name, gr in zip(leaves.keys(), grads):
            out[f"{tag}.{case}.grad_{name}"] = gr.detach().contiguous()

    pp, yy = leaf("p"), leaf("y")
    record("dice_sq", dice_loss(pp, yy), p=pp, y=yy)
    pp, yy = leaf("p"), leaf("y")
    record("dice_lin", dice_loss1(pp, yy), p=pp, y=yy)
    dd = leaf("d")
    record("dice_sdm", dice_loss(torch.sigmoid(-K * dd), x["y"]), d=dd)
    ll = leaf("logits")
    record("dice_logits", dice_loss(torch.sigmoid(ll), x["y"]), logits=ll)

    ll, yy = leaf("logits"), leaf("y")
    record("bce", F.binary_cross_entropy_with_logits(ll, yy), logits=ll, y=yy)

    dd = leaf("d")
    mask = torch.sigmoid(-K * dd)
    out[f"{tag}.mask.value"] = mask.detach().contiguous()
    (gd,) = torch.autograd.grad((mask * x["r"]).sum(), [dd])
    out[f"{tag}.mask.grad_d"] = gd.contiguous()

    dd, tt = leaf("d"), leaf("t")
    record("l1", F.l1_loss(dd, tt), d=dd, t=tt)
    dd, tt = leaf("d"), leaf("t")
    record("mse", F.mse_loss(dd, tt), d=dd, t=tt)

    qq, pp = leaf("q"), leaf("p")
    record("cons", torch.mean((qq - pp) ** 2), q=qq, p=pp)
    dd, ll = leaf("d"), leaf("logits")
    record("cons_chain", torch.mean((torch.sigmoid(-K * dd) - torch.sigmoid(ll)) ** 2), d=dd, logits=ll)
    return out


out = {}
out.update(run(torch.float64, "f64"))
out.update(run(torch.float32, "f32"))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loss_golden.safetensors")
save_file(out, path)  # no metadata: its key order is not stable, the bytes are
print(path, os.path.getsize(path), "bytes", len(out), "tensors")
