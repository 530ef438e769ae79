"""Lockstep golden values: N training iterations of each method, run in PyTorch in f64.

Run with a Python that has torch, numpy, scipy and safetensors:
    python data-fixtures/lockstep/make_lockstep_fixture.py [OUT_DIR]
It writes, for `crates/dtml-train/tests/lockstep.rs`:
- `init_a.pth`, `init_b.pth`: width-2 V-Nets (PyTorch default initialisation, f32),
  the students' starting weights;
- `lockstep.json`: the run's settings, how many iterations of each method are
  compared (all, unless PyTorch's own run is chaotic: see `main`), every iteration's batch plan (which case,
  quarter turns, flip axis, crop origin of each patch), and PyTorch's per-iteration
  loss, loss parts, consistency weight and learning rate;
- `lockstep.safetensors`: the training cases (x, y, z order), every iteration's
  dropout keep-masks, and after the last iteration each parameter's norm, the norm
  of its change from the start, and all BN running statistics.

Everything here is written from shared/method.md, independently of the Rust
trainer: the batch is assembled with np.rot90 / np.flip / zero padding, the SDM
target with scipy's EDT and an erosion for the inner boundary, the objectives
and the two backward passes of the released code literally, the schedule as
"lr x0.1 once t >= 5/12 N and again once t >= 10/12 N" and the ramp-up as
`exp(-5 (1 - r)^2)`, `r = clamp(floor(t / (N / 40)) / 40, 0, 1)`, SGD from
torch.optim. The Rust test feeds the same cases, plans, masks and initial
weights to dtml's trainer and must reproduce these numbers.
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from scipy import ndimage as ndi

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/vnet")
from make_vnet_fixture import VNet  # noqa: E402  (the module tree the V-Net golden test uses)

ITERATIONS = 20
WIDTH = 2
PATCH = (32, 16, 16)  # (x, y, z): x != y so an axis mix-up cannot pass
LABELLED_BATCH, UNLABELLED_BATCH = 2, 2
# (x, y, z) case sizes: z below the patch (zero padding), x/y on both sides of it
CASE_SHAPES = [(36, 22, 14), (30, 34, 18), (40, 20, 16), (34, 26, 13), (24, 38, 20), (38, 30, 15)]
LABELLED_CASES = 3
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
LR_STEPS, LR_GAMMA = (5 / 12, 10 / 12), 0.1
SHARPNESS, DROPOUT, DTC_BETA = 1500.0, 0.5, 0.3
METHODS = ["dtml", "dtml-released", "dtc", "supervised"]


def make_cases(rng):
    """Blob-shaped foreground, image = contrast + smooth drift + noise (rounded to f32)."""
    cases = []
    for shape in CASE_SHAPES:
        grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
        centre = [rng.uniform(0.35, 0.65) * n for n in shape]
        radii = [rng.uniform(0.2, 0.35) * n for n in shape]
        r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
        label = (r2 <= 1.0).astype(np.uint8)
        drift = 0.3 * np.sin(grid[0] / 7.0 + rng.uniform(0, 6)) * np.cos(grid[1] / 5.0)
        image = 1.2 * label + drift + rng.normal(0.0, 0.5, shape)
        image = (image - image.mean()) / image.std()
        cases.append((image.astype(np.float32), label))
    return cases


def draw_plan(rng, n_labelled, n_unlabelled, shapes_lab, shapes_unl):
    """Per patch: labelled or not, case index, quarter turns, flip axis, crop origin (x, y, z)."""
    plan = []
    for i in range(n_labelled + n_unlabelled):
        labelled = i < n_labelled
        pool = shapes_lab if labelled else shapes_unl
        case = int(rng.integers(len(pool)))
        turns, flip = int(rng.integers(4)), int(rng.integers(2))
        shape = list(pool[case])
        if turns % 2 == 1:
            shape[0], shape[1] = shape[1], shape[0]
        origin = []
        for n, p in zip(shape, PATCH):
            slack = n - p
            lo, hi = min(slack, 0), max(slack, 0)
            origin.append(int(rng.integers(lo, hi + 1)))
        plan.append({"labelled": labelled, "case": case, "quarter_turns": turns, "flip_axis": flip, "origin": origin})
    return plan


def crop(volume, entry):
    """rot90 over (x, y), flip, then the patch at `origin`, zeros outside the volume."""
    v = np.flip(np.rot90(volume, entry["quarter_turns"], axes=(0, 1)), axis=entry["flip_axis"])
    out = np.zeros(PATCH, dtype=volume.dtype)
    src, dst = [], []
    for o, n, p in zip(entry["origin"], v.shape, PATCH):
        a, b = max(o, 0), min(o + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - o, b - o))
    out[tuple(dst)] = v[tuple(src)]
    return out


def sdm_target(mask):
    """method.md's normalised SDM of one patch, voxel units, rounded to f32."""
    m = mask > 0
    if not m.any():
        return np.zeros(m.shape)
    if m.all():
        return -np.ones(m.shape)
    pos, neg = ndi.distance_transform_edt(m), ndi.distance_transform_edt(~m)
    t = neg / neg.max() - pos / pos.max()
    inner = m & ~ndi.binary_erosion(m, ndi.generate_binary_structure(3, 1), border_value=1)
    t[inner] = 0.0
    return t.astype(np.float32).astype(np.float64)


def lr_at(t):
    return LR * LR_GAMMA ** sum(t >= f * ITERATIONS for f in LR_STEPS)


def lambda_at(t):
    r = min(max(math.floor(t / (ITERATIONS / 40)) / 40, 0.0), 1.0)
    return math.exp(-5 * (1 - r) ** 2)


def dice_loss(p, y):
    return 1 - (2 * (p * y).sum() + 1e-5) / ((p * p).sum() + (y * y).sum() + 1e-5)


def forward(net, x, masks):
    """Train-mode forward with given Dropout3d keep-masks (N, C) after the bottleneck and the last stage."""
    x1 = net.block_one(x)
    x2 = net.block_two(net.block_one_dw(x1))
    x3 = net.block_three(net.block_two_dw(x2))
    x4 = net.block_four(net.block_three_dw(x3))
    x5 = net.block_five(net.block_four_dw(x4)) * masks[0][:, :, None, None, None]
    x6 = net.block_six(net.block_five_up(x5) + x4)
    x7 = net.block_seven(net.block_six_up(x6) + x3)
    x8 = net.block_eight(net.block_seven_up(x7) + x2)
    x9 = net.block_nine(net.block_eight_up(x8) + x1) * masks[1][:, :, None, None, None]
    return torch.tanh(net.out_conv(x9))[:, 0], net.out_conv2(x9)[:, 0]


def run(method, cases, init, rng, tensors, stop=ITERATIONS):
    """Trains `method` for `stop` iterations of an ITERATIONS-long schedule."""
    labelled, unlabelled = cases[:LABELLED_CASES], cases[LABELLED_CASES:]
    two = method in ("dtml", "dtml-released")
    n_lab, n_unl = (LABELLED_BATCH, UNLABELLED_BATCH) if method != "supervised" else (LABELLED_BATCH + UNLABELLED_BATCH, 0)
    nets = []
    for state in init[: 2 if two else 1]:
        net = VNet(1, WIDTH, 1).double()
        net.load_state_dict(state)
        net.train()
        nets.append(net)
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    bce = nn.BCEWithLogitsLoss()
    iterations = []
    for t in range(stop):
        plan = draw_plan(rng, n_lab, n_unl, [c[0].shape for c in labelled], [c[0].shape for c in unlabelled])
        images, labels = [], []
        for e in plan:
            image, label = (labelled if e["labelled"] else unlabelled)[e["case"]]
            images.append(crop(image, e))
            if e["labelled"]:
                labels.append(crop(label, e))
        x = torch.from_numpy(np.stack(images).astype(np.float64))[:, None]
        y = torch.from_numpy(np.stack(labels).astype(np.float64))
        target = torch.from_numpy(np.stack([sdm_target(m) for m in labels]))
        n = n_lab + n_unl
        masks = []
        for i, _ in enumerate(nets):
            pair = [torch.from_numpy((rng.random((n, c)) >= DROPOUT) / (1 - DROPOUT)) for c in (16 * WIDTH, WIDTH)]
            tensors[f"{method}.{t}.dropout{i}.bottleneck"] = pair[0]
            tensors[f"{method}.{t}.dropout{i}.last"] = pair[1]
            masks.append(pair)
        lam, lr = lambda_at(t), lr_at(t)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        L = n_lab
        if two:
            _, seg_a = forward(nets[0], x, masks[0])
            d_b, _ = forward(nets[1], x, masks[1])
            p_a, q_b = torch.sigmoid(seg_a), torch.sigmoid(-SHARPNESS * d_b)
            loss_a = 0.5 * (bce(seg_a[:L], y) + dice_loss(p_a[:L], y))
            dice_b = dice_loss(q_b[:L], y)
            cons = ((q_b - p_a) ** 2).mean()
            parts = {"loss_a": loss_a, "dice_b": dice_b, "consistency": cons}
            if method == "dtml":
                sdm_b = (d_b[:L] - target).abs().mean()
                parts["sdm_b"] = sdm_b
                total = loss_a + sdm_b + dice_b + lam * cons
                total.backward()
            else:
                # The released code: two backward passes through the shared graph.
                (loss_a + lam * cons).backward(retain_graph=True)
                (dice_b + lam * cons).backward()
                total = loss_a + dice_b + 2 * lam * cons
        elif method == "dtc":
            d, seg = forward(nets[0], x, masks[0])
            p, q = torch.sigmoid(seg), torch.sigmoid(-SHARPNESS * d)
            dice = dice_loss(p[:L], y)
            mse = ((d[:L] - target) ** 2).mean()
            cons = ((q - p) ** 2).mean()
            parts = {"dice": dice, "sdm_mse": mse, "consistency": cons}
            total = dice + DTC_BETA * mse + lam * cons
            total.backward()
        else:
            _, seg = forward(nets[0], x, masks[0])
            loss = 0.5 * (bce(seg, y) + dice_loss(torch.sigmoid(seg), y))
            parts = {"loss": loss}
            total = loss
            total.backward()
        opt.step()
        iterations.append({
            "plan": plan, "lambda": lam, "lr": lr, "loss": total.item(),
            "parts": {k: v.item() for k, v in parts.items()},
        })
    for i, net in enumerate(nets):
        start = init[i]
        for k, v in net.state_dict().items():
            if "running" in k:
                tensors[f"{method}.net{i}.{k}"] = v.detach().clone()
            elif "num_batches" not in k:
                tensors[f"{method}.net{i}.norm.{k}"] = v.detach().norm().reshape(1)
                tensors[f"{method}.net{i}.change.{k}"] = (v.detach() - start[k]).norm().reshape(1)
    return iterations


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "data-fixtures/lockstep"
    torch.manual_seed(2026)
    init = []
    for name in ("a", "b"):
        net = VNet(1, WIDTH, 1)
        state = {k: v.float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
        torch.save(state, f"{out}/init_{name}.pth")
        init.append({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    rng = np.random.default_rng(11)
    cases = make_cases(rng)
    tensors = {}
    for i, (image, label) in enumerate(cases):
        tensors[f"case{i}.image"] = torch.from_numpy(image)
        tensors[f"case{i}.label"] = torch.from_numpy(label)
    # A method whose PyTorch run is chaotic (DTC: the sharp sigmoid between
    # two heads of one network amplifies a 1e-13 change of the weights to
    # 1e-8 within a few steps) cannot be compared past the point where it
    # departs from itself; each method is compared for as long as a
    # PyTorch rerun from weights scaled by 1 + 1e-13 stays within 1e-10.
    runs, stable_for = {}, {}
    for m in METHODS:
        before = rng.bit_generator.state
        losses = [r["loss"] for r in run(m, cases, init, rng, {})]
        after = rng.bit_generator.state
        rng.bit_generator.state = before
        nudged = [{k: v * (1 + 1e-13) if v.is_floating_point() else v for k, v in s.items()} for s in init]
        other = [r["loss"] for r in run(m, cases, nudged, rng, {})]
        diverged = [t for t, (a, b) in enumerate(zip(losses, other)) if abs(a - b) > 1e-10 * abs(a)]
        # The weights after step t - 1 make the loss of step t: the last
        # stable state is the one before the first unstable loss's step.
        stable_for[m] = diverged[0] - 1 if diverged else ITERATIONS
        rng.bit_generator.state = before
        runs[m] = run(m, cases, init, rng, tensors, stop=stable_for[m])
        rng.bit_generator.state = after
    meta = {
        "iterations": ITERATIONS, "width": WIDTH, "patch": PATCH, "labelled_batch": LABELLED_BATCH,
        "unlabelled_batch": UNLABELLED_BATCH, "cases": len(cases), "labelled_cases": LABELLED_CASES,
        "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "lr_steps": LR_STEPS,
        "lr_gamma": LR_GAMMA, "sharpness": SHARPNESS, "dropout": DROPOUT, "dtc_beta": DTC_BETA,
        "stable_iterations": stable_for, "runs": runs,
    }
    with open(f"{out}/lockstep.json", "w") as f:
        json.dump(meta, f, indent=1)
    # Cases as the trainer holds them (f32 image, u8 label); goldens in f64.
    save_file({k: v.contiguous() if k.startswith("case") else v.contiguous().double() for k, v in tensors.items()},
              f"{out}/lockstep.safetensors")
    for m in METHODS:
        print(m, stable_for[m], "iterations compared;", " ".join(f"{r['loss']:.6f}" for r in runs[m][::5]))


if __name__ == "__main__":
    main()
