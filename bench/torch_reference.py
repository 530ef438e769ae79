"""dtml's PyTorch reference trainer: shared/method.md and the baselines' specs (docs/methods/) written
in PyTorch, independently of the Rust code; the baselines' networks and losses live in
`torch_methods.py`, which this module imports whole.

Two uses:
- a module: `data-fixtures/lockstep/make_lockstep_fixture.py` builds the lockstep golden values from
  its pieces (`crop`, `sdm_target`, `objective`, `lr_at`, `lambda_at`, `forward`), so the trainer
  the study runs is the one the lockstep test holds dtml's trainer to;
- a command: train one method on a dtml prepared cache (the same cases, crops and labelled split
  dtml trains on) and save the students as `.pth`, which `dtml evaluate` scores exactly as it
  scores its own runs (its sliding window is golden-tested against the reference one):

    torch_reference.py train PREPARED OUT METHOD(dtml|supervised|dtc|mean-teacher|ua-mt|cps|mc-net|mc-net-plus|sassnet|bcp|entropy-min) ITERATIONS SEED [WIDTH] [PATCH x,y,z] [DROPOUT]

Batches: labelled and unlabelled case streams are fresh permutations per pass (as dtml draws
them), each patch gets a random rot90 in x-y, a flip of x or y and a random crop (zero padding
where the case is smaller than the patch). Channel dropout with probability DROPOUT (default: dtml's
for the method: 0 for dtml, the released 0.5 for the others) after the bottleneck and the last stage. f32,
2 threads.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage as ndi

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data-fixtures", "vnet"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vnet_fixture import VNet  # noqa: E402  (the module tree the V-Net golden test uses)
from torch_methods import *  # noqa: E402,F401,F403  (the baselines' pieces; `ref.X` reaches them too)

SHARPNESS = 1500.0
LR_STEPS, LR_GAMMA = (5 / 12, 10 / 12), 0.1
DTC_BETA = 0.3
# Mean teacher and UA-MT as UA-MT's code trains them (docs/methods/mean-teacher.md, ua-mt.md).
MT_CONSISTENCY, EMA_DECAY, NOISE_STD, NOISE_BOUND = 0.1, 0.99, 0.1, 0.2
TEACHERS = ("mean-teacher", "ua-mt")
MC_PASSES = 4  # UA-MT: T = 8 samples as 4 passes of the unlabelled patches twice over
# Cross pseudo supervision as SSL4MIS's 3D code trains it (docs/methods/cps.md).
CPS_CONSISTENCY, POLY_POWER = 0.1, 0.9
POLY_METHODS = ("cps", "entropy-min")
# MC-Net as its released code trains it (docs/methods/mc-net.md): constant LR, Dice weight 0.5,
# sharpening temperature 0.1, Binary_dice_loss's 1e-8.
CONSTANT_LR_METHODS = ("mc-net", "mc-net-plus")
MC_DICE_WEIGHT, MC_TEMPERATURE, MC_DICE_SMOOTH = 0.5, 0.1, 1e-8
# SASSNet as its released code trains it (docs/methods/sassnet.md): adversarial weight 0.01, SDM MSE
# weight 0.3, the discriminator (width 64) trained by Adam(1e-4, betas (0.9, 0.99)) after every step.
SASS_CONSISTENCY, SASS_BETA = 0.01, 0.3
# BCP as its released code trains it (docs/methods/bcp.md): pre-training on the first 2000 of 17000
# iterations, a box of 2/3 of each side, pseudo-labelled voxels weighted 0.5, a fixed EMA factor.
BCP_PRETRAIN_FRACTION, BCP_MASK_RATIO, BCP_U_WEIGHT = 2000 / 17000, 2 / 3, 0.5


def lr_at(t, iterations, lr=0.01, method=None):
    """x0.1 once t >= 5/12 N and again once t >= 10/12 N (the reference's `0.1 ** (t // 2500)`);
    for the SSL4MIS-family methods lr (1 - t / N)^0.9, the rate their code sets after step t - 1;
    for BCP constant while it pre-trains, then the steps over the rest of the run."""
    if method == "bcp":
        start = bcp_start(iterations)
        if t < start:
            return lr
        t, iterations = t - start, iterations - start
    if method in POLY_METHODS:
        return lr * (1.0 - t / iterations) ** POLY_POWER
    if method in CONSTANT_LR_METHODS:
        return lr
    return lr * LR_GAMMA ** sum(t >= f * iterations for f in LR_STEPS)


def lambda_at(t, iterations):
    r = min(max(math.floor(t / (iterations / 40)) / 40, 0.0), 1.0)
    return math.exp(-5 * (1 - r) ** 2)


def crop(volume, entry, patch):
    """rot90 over (x, y), flip, then the patch at `origin` (x, y, z), zeros outside the volume."""
    v = np.flip(np.rot90(volume, entry["quarter_turns"], axes=(0, 1)), axis=entry["flip_axis"])
    out = np.zeros(patch, dtype=volume.dtype)
    src, dst = [], []
    for o, n, p in zip(entry["origin"], v.shape, patch):
        a, b = max(o, 0), min(o + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - o, b - o))
    out[tuple(dst)] = v[tuple(src)]
    return out


def draw_view(rng, shape, patch):
    """Quarter turns, flip axis and a crop origin for a case of `shape` (x, y, z)."""
    turns, flip = int(rng.integers(4)), int(rng.integers(2))
    shape = list(shape)
    if turns % 2 == 1:
        shape[0], shape[1] = shape[1], shape[0]
    origin = []
    for n, p in zip(shape, patch):
        slack = n - p
        origin.append(int(rng.integers(min(slack, 0), max(slack, 0) + 1)))
    return {"quarter_turns": turns, "flip_axis": flip, "origin": origin}


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


def dice_loss(p, y):
    return 1 - (2 * (p * y).sum() + 1e-5) / ((p * p).sum() + (y * y).sum() + 1e-5)


def ssl4mis_supervised(z, y):
    """SSL4MIS's 3D supervised loss: 0.5 (CE + DiceLoss(2)), its Dice the mean of the background's and
    the foreground's."""
    p = torch.sigmoid(z)
    ce = nn.functional.binary_cross_entropy_with_logits(z, y)
    return 0.5 * (ce + 0.5 * (dice_loss(p, y) + dice_loss(1 - p, 1 - y)))


def forward(net, x, masks):
    """Train-mode forward with Dropout3d keep-masks (N, C) after the bottleneck and the last stage."""
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


def bcp_start(iterations):
    """BCP's first self-training iteration."""
    return int(math.floor(BCP_PRETRAIN_FRACTION * iterations + 0.5))


def bcp_box(rng, patch):
    """The copy-paste box: (origin, size) per axis (x, y, z), origin in 0..side - size as the released
    `context_mask`'s np.random.randint(0, side - size)."""
    size = [int(s * BCP_MASK_RATIO) for s in patch]
    origin = [int(rng.integers(0, s - z)) for s, z in zip(patch, size)]
    return origin, size


def bcp_objective(nets, x, y, masks, n_lab, t, iterations, box):
    """One BCP step's forward passes and loss (runs backward). The teacher must already be the
    pre-trained student at the first self-training step (`bcp_copy_teacher`)."""
    h = n_lab // 2
    img_a, img_b, lab_a, lab_b = x[:h], x[h:n_lab], y[:h], y[h:n_lab]
    m = bcp_mask(tuple(x.shape[2:]), box[0], box[1], x.dtype)
    if t < bcp_start(iterations):
        _, z = forward(nets[0], img_a * m + img_b * (1 - m), masks[0])
        label = lab_a * m + lab_b * (1 - m)
        ce, dice = bcp_ce(z, label, torch.ones_like(m)), bcp_dice(z, label, torch.ones_like(m))
        total = (ce + dice) / 2
        total.backward()
        return total, {"pretrain_ce": ce, "pretrain_dice": dice}
    unl_a, unl_b = x[n_lab:n_lab + h], x[n_lab + h:]
    with torch.no_grad():
        plab = [torch.from_numpy(largest_cc((forward(nets[1], u, masks[k])[1] >= 0).numpy())).to(x.dtype)
                for k, u in enumerate((unl_a, unl_b))]
    mm = m[None, None]
    _, z_l = forward(nets[0], img_a * mm + unl_a * (1 - mm), masks[2])
    _, z_u = forward(nets[0], unl_b * mm + img_b * (1 - mm), masks[3])
    loss_l = bcp_mix_loss(z_l, lab_a, plab[0], m, 1.0, BCP_U_WEIGHT)
    loss_u = bcp_mix_loss(z_u, plab[1], lab_b, m, BCP_U_WEIGHT, 1.0)
    total = loss_l + loss_u
    total.backward()
    return total, {"loss_l": loss_l, "loss_u": loss_u}


def make_networks(method, width):
    """The method's networks, PyTorch-default initialised (CPS re-initialises them in `train`)."""
    if method in EXTRA_DECODERS:
        return [McNet(1, width, 1, EXTRA_DECODERS[method])]
    return [VNet(1, width, 1) for _ in range(networks(method))]


def mask_channels(method, width):
    """Channels of each dropout mask of one forward pass: bottleneck, last stage, extra decoders'."""
    return (16 * width, width) + (width,) * len(EXTRA_DECODERS.get(method, ()))


def networks(method):
    return 2 if method in ("dtml", "dtml-released", "cps", "bcp") + TEACHERS else 1


def trained(method, nets):
    """The networks SGD trains: all but a teacher."""
    return nets[:1] if method in TEACHERS + ("bcp",) else nets


def consistency_weight(method):
    """Final weight w of lambda(t): each method's released value."""
    if method == "sassnet":
        return SASS_CONSISTENCY
    return MT_CONSISTENCY if method in TEACHERS else CPS_CONSISTENCY if method in ("cps", "entropy-min") else 1.0


def default_dropout(method):
    """dtml's default per method: 0 for dtml (measured), the released 0.5 for the others."""
    return 0.0 if method == "dtml" else 0.5


def pass_rows(method, n_lab, n_unl, t=0, iterations=1):
    """Patches seen by each forward pass of step t, in order (one dropout-mask pair each)."""
    n = n_lab + n_unl
    if method == "bcp":
        # Pre-training: the student on the pasted labelled halves; then the teacher on both unlabelled
        # halves and the student on both mixed halves.
        return [n_lab // 2] if t < bcp_start(iterations) else [n_lab // 2] * 4
    if method == "mean-teacher":
        return [n, n_unl]
    if method == "ua-mt":
        return [n, n_unl] + [2 * n_unl] * MC_PASSES
    return [n] * networks(method)


def noise_shapes(method, x, n_lab):
    """Shapes of the step's input-noise draws, in order: the teacher's, then UA-MT's Monte-Carlo passes'."""
    u = tuple(x[n_lab:].shape)
    if method == "mean-teacher":
        return [u]
    if method == "ua-mt":
        return [u] + [(2 * u[0],) + u[1:]] * MC_PASSES
    return []


def ua_mt_threshold(t, iterations):
    """(0.75 + 0.25 sigmoid_rampup(t, N)) ln 2, the released ramp without flooring."""
    phase = 1.0 - min(max(t / iterations, 0.0), 1.0)
    return (0.75 + 0.25 * math.exp(-5.0 * phase * phase)) * math.log(2)


def teacher_noise(rng, shape):
    """clamp(randn * 0.1, -0.2, 0.2) of the unlabelled patches' shape (None for other methods)."""
    return np.clip(rng.standard_normal(shape) * NOISE_STD, -NOISE_BOUND, NOISE_BOUND)


def ema_update(method, nets, t, decay=EMA_DECAY):
    """After the optimiser step of 0-based iteration t: the teacher follows the student's weights
    (parameters only; BN running statistics stay the teacher's own), as the released
    update_ema_variables with alpha = min(1 - 1 / (t + 1), decay)."""
    if method not in TEACHERS:
        return
    alpha = min(1 - 1 / (t + 1), decay)
    with torch.no_grad():
        for tp, sp in zip(nets[1].parameters(), nets[0].parameters()):
            tp.mul_(alpha).add_(sp, alpha=1 - alpha)


def objective(method, nets, x, y, target, masks, lam, noise=(), threshold=None, disc=None):
    """Forward passes and the method's loss; runs its backward pass(es). Returns (total, parts).
    `lam` is the whole consistency weight lambda(t) (consistency_weight(method) * ramp); `masks`
    one pair per forward pass (pass_rows), `noise` the input-noise draws (noise_shapes), `threshold`
    UA-MT's uncertainty threshold of the iteration, `disc` SASSNet's discriminator."""
    bce = nn.BCEWithLogitsLoss()
    L = y.shape[0]
    if method in TEACHERS:
        _, seg = forward(nets[0], x, masks[0])
        with torch.no_grad():
            _, seg_t = forward(nets[1], x[L:] + noise[0], masks[1])
        loss = 0.5 * (bce(seg[:L], y) + dice_loss(torch.sigmoid(seg[:L]), y))
        d = (torch.sigmoid(seg[L:]) - torch.sigmoid(seg_t)) ** 2
        if method == "mean-teacher":
            cons = d.mean()
            parts = {"loss": loss, "consistency": cons}
        else:
            u = x.shape[0] - L
            with torch.no_grad():
                r = x[L:].repeat(2, 1, 1, 1, 1)
                probs = [torch.sigmoid(forward(nets[1], r + noise[1 + k], masks[2 + k])[1]) for k in range(MC_PASSES)]
                p = torch.cat(probs).reshape((2 * MC_PASSES, u) + tuple(seg_t.shape[1:])).mean(0)
                uncertainty = -(p * torch.log(p + 1e-6) + (1 - p) * torch.log(1 - p + 1e-6))
                mask = (uncertainty < threshold).to(d.dtype)
            cons = 2 * (mask * d).sum() / (2 * mask.sum() + 1e-16)
            parts = {"loss": loss, "consistency": cons, "certain_share": mask.mean()}
        total = loss + lam * cons
        total.backward()
    elif method == "sassnet":
        d, seg = forward(nets[0], x, masks[0])
        dice = dice_loss(torch.sigmoid(seg[:L]), y)
        mse = ((d[:L] - target) ** 2).mean()
        # The discriminator in evaluation mode: the unlabelled maps should pass for labelled ones.
        logits = disc(d[L:, None], x[L:])
        adversarial = nn.functional.cross_entropy(logits, torch.ones(x.shape[0] - L, dtype=torch.long))
        parts = {"dice": dice, "sdm_mse": mse, "adversarial": adversarial}
        total = dice + SASS_BETA * mse + lam * adversarial
        total.backward()
    elif method in EXTRA_DECODERS:
        probs = [torch.sigmoid(z) for z in mc_forward(nets[0], x, masks[0])]
        dice = sum(1 - (2 * (p[:L] * y).sum() + MC_DICE_SMOOTH) / (p[:L].sum() + y.sum() + MC_DICE_SMOOTH) for p in probs)
        # The released sharpening, literally, and not detached.
        sharp = [p ** (1 / MC_TEMPERATURE) / (p ** (1 / MC_TEMPERATURE) + (1 - p) ** (1 / MC_TEMPERATURE)) for p in probs]
        cons = sum(((probs[i] - sharp[j]) ** 2).mean() for i in range(len(probs)) for j in range(len(probs)) if i != j)
        parts = {"dice": dice, "consistency": cons}
        total = MC_DICE_WEIGHT * dice + lam * cons
        total.backward()
    elif method == "entropy-min":
        _, z = forward(nets[0], x, masks[0])
        loss = ssl4mis_supervised(z[:L], y)
        p = torch.sigmoid(z)
        # The released two-class entropy_loss: sum over the classes, / ln 2, mean over the voxels.
        entropy = (-(p * torch.log(p + 1e-6) + (1 - p) * torch.log(1 - p + 1e-6)) / math.log(2)).mean()
        parts = {"loss": loss, "entropy": entropy}
        total = loss + lam * entropy
        total.backward()
    elif method == "cps":
        _, seg_1 = forward(nets[0], x, masks[0])
        _, seg_2 = forward(nets[1], x, masks[1])
        loss_1, loss_2 = ssl4mis_supervised(seg_1[:L], y), ssl4mis_supervised(seg_2[:L], y)
        # Two-class argmax of the other network's detached prediction: foreground iff its logit > 0.
        hard_1, hard_2 = (seg_1[L:].detach() > 0).to(x.dtype), (seg_2[L:].detach() > 0).to(x.dtype)
        cps = bce(seg_1[L:], hard_2) + bce(seg_2[L:], hard_1)
        parts = {"loss_1": loss_1, "loss_2": loss_2, "cps": cps}
        total = loss_1 + loss_2 + lam * cps
        total.backward()
    elif networks(method) == 2:
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
    return total, parts


def dropout_masks(rng, n, width, p, dtype, method=None):
    return [torch.from_numpy((rng.random((n, c)) >= p) / (1 - p)).to(dtype) for c in mask_channels(method, width)]


def load_prepared(prepared):
    """Labelled and unlabelled cases of a dtml cache as (x, y, z) arrays: [(image f32, label u8 or None)]."""
    from safetensors.numpy import load_file
    manifest = json.load(open(os.path.join(prepared, "manifest.json")))
    pools = {"labelled": [], "unlabelled": []}
    for case in manifest["cases"]:
        role = case["role"]
        if role not in pools:
            continue
        t = load_file(os.path.join(prepared, case["file"]))
        image = np.ascontiguousarray(t["image"].transpose(2, 1, 0))
        label = np.ascontiguousarray(t["label"].transpose(2, 1, 0)) if role == "labelled" else None
        pools[role].append((image, label))
    return pools["labelled"], pools["unlabelled"]


class Stream:
    """An endless stream of case indices made of fresh permutations, one per pass."""

    def __init__(self, rng, n):
        self.rng, self.n, self.order = rng, n, []

    def next(self):
        if not self.order:
            self.order = list(self.rng.permutation(self.n))
        return int(self.order.pop(0))


def train(prepared, out, method, iterations, seed, width=8, patch=(48, 48, 32), dropout=None):
    dropout = default_dropout(method) if dropout is None else dropout
    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get("DTML_REFERENCE_THREADS", "2")))
    rng = np.random.default_rng(seed)
    labelled, unlabelled = load_prepared(prepared)
    n_lab, n_unl = (2, 2) if method != "supervised" else (4, 0)
    nets = make_networks(method, width)
    if method == "cps":
        # The released code's two re-initialisations of every Conv3d weight.
        for net, init in zip(nets, (nn.init.kaiming_normal_, nn.init.xavier_normal_)):
            for m in net.modules():
                if isinstance(m, nn.Conv3d):
                    init(m.weight)
    for n in nets:
        n.train()
    opt = torch.optim.SGD([p for n in trained(method, nets) for p in n.parameters()], lr=0.01, momentum=0.9, weight_decay=1e-4)
    disc = Discriminator() if method == "sassnet" else None
    dopt = torch.optim.Adam(disc.parameters(), lr=DISC_LR, betas=DISC_BETAS) if disc is not None else None
    lab_stream, unl_stream = Stream(rng, len(labelled)), Stream(rng, max(len(unlabelled), 1))
    start, log = time.time(), []
    for t in range(iterations):
        images, labels = [], []
        for i in range(n_lab + n_unl):
            image, label = labelled[lab_stream.next()] if i < n_lab else unlabelled[unl_stream.next()]
            view = draw_view(rng, image.shape, patch)
            images.append(crop(image, view, patch))
            if i < n_lab:
                labels.append(crop(label, view, patch))
        x = torch.from_numpy(np.stack(images))[:, None]
        y = torch.from_numpy(np.stack(labels).astype(np.float32))
        target = None
        if method in ("dtml", "dtc", "sassnet"):
            target = torch.from_numpy(np.stack([sdm_target(m) for m in labels]).astype(np.float32))
        masks = [dropout_masks(rng, rows, width, dropout, torch.float32, method)
                 for rows in pass_rows(method, n_lab, n_unl, t, iterations)]
        noise = [torch.from_numpy(teacher_noise(rng, s).astype(np.float32)) for s in noise_shapes(method, x, n_lab)]
        for g in opt.param_groups:
            g["lr"] = lr_at(t, iterations, method=method)
        if method == "bcp" and t == bcp_start(iterations):
            # Self-training: the teacher from the pre-trained student, a fresh optimizer.
            bcp_copy_teacher(nets)
            opt = torch.optim.SGD(nets[0].parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
            for g in opt.param_groups:
                g["lr"] = lr_at(t, iterations, method=method)
        opt.zero_grad()
        if method == "bcp":
            total, _ = bcp_objective(nets, x, y, masks, n_lab, t, iterations, bcp_box(rng, patch))
        else:
            total, _ = objective(method, nets, x, y, target, masks, consistency_weight(method) * lambda_at(t, iterations),
                                 noise, ua_mt_threshold(t, iterations), disc)
        opt.step()
        if method == "bcp" and t >= bcp_start(iterations):
            bcp_ema(nets, EMA_DECAY)
        if disc is not None:
            dmasks = [torch.from_numpy((rng.random((x.shape[0], c)) >= DISC_DROPOUT) / (1 - DISC_DROPOUT)).float()
                      for c in disc_mask_channels(DISC_WIDTH)]
            discriminator_step(nets[0], disc, dopt, x, n_lab, dmasks)
        ema_update(method, nets, t)
        log.append(total.item())
        if t % 100 == 0:
            print(f"it {t} loss {total.item():.4f} {time.time() - start:.0f}s", flush=True)
    os.makedirs(out, exist_ok=True)
    # The students inference reads: a teacher is not one of them, nor CPS's second network.
    for i, n in enumerate(nets[:1] if method == "cps" else trained(method, nets)):
        torch.save(n.state_dict(), os.path.join(out, f"student_{'ab'[i]}.pth"))
    json.dump({"method": method, "iterations": iterations, "seed": seed, "width": width, "patch": list(patch), "dropout": dropout,
               "seconds": round(time.time() - start, 1), "loss": log}, open(os.path.join(out, "reference.json"), "w"))


if __name__ == "__main__":
    if len(sys.argv) < 7 or sys.argv[1] != "train":
        sys.exit(__doc__)
    _, _, prepared, out, method, iterations, seed = sys.argv[:7]
    width = int(sys.argv[7]) if len(sys.argv) > 7 else 8
    patch = tuple(int(v) for v in sys.argv[8].split(",")) if len(sys.argv) > 8 else (48, 48, 32)
    dropout = float(sys.argv[9]) if len(sys.argv) > 9 else None
    train(prepared, out, method, int(iterations), int(seed), width, patch, dropout)
