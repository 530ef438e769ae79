"""Lockstep golden values: N training iterations of each method, run in PyTorch in f64.

Run with a Python that has torch, numpy, scipy and safetensors:
    python data-fixtures/lockstep/make_lockstep_fixture.py [OUT_DIR]
`--trajectory OUT [ITERATIONS [WIDTH [METHODS]]]` writes the same files for a longer f32
run instead (see `trajectory`). It writes, for `crates/dtml-train/tests/lockstep.rs`:
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
trainer, in `bench/torch_reference.py` (the PyTorch trainer `cargo xtask study`
runs beside dtml): the batch is assembled with np.rot90 / np.flip / zero
padding, the SDM target with scipy's EDT and an erosion for the inner boundary,
the objectives and the two backward passes of the released code literally, the
schedule as "lr x0.1 once t >= 5/12 N and again once t >= 10/12 N" and the
ramp-up as `exp(-5 (1 - r)^2)`, `r = clamp(floor(t / (N / 40)) / 40, 0, 1)`,
SGD from torch.optim. The Rust test feeds the same cases, plans, masks and initial
weights to dtml's trainer and must reproduce these numbers.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import torch_reference as ref  # noqa: E402  (the PyTorch trainer the study runs)
from torch_reference import VNet  # noqa: E402

ITERATIONS = 20
WIDTH = 2
PATCH = (32, 16, 16)  # (x, y, z): x != y so an axis mix-up cannot pass
LABELLED_BATCH, UNLABELLED_BATCH = 2, 2
# (x, y, z) case sizes: z below the patch (zero padding), x/y on both sides of it
CASE_SHAPES = [(36, 22, 14), (30, 34, 18), (40, 20, 16), (34, 26, 13), (24, 38, 20), (38, 30, 15)]
LABELLED_CASES = 3
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
LR_STEPS, LR_GAMMA, SHARPNESS, DTC_BETA = ref.LR_STEPS, ref.LR_GAMMA, ref.SHARPNESS, ref.DTC_BETA
DROPOUT = 0.5
# The mean teacher's decay: below the released 0.99 so that it binds within 20 iterations
# (alpha = min(1 - 1 / (t + 1), decay) is 0.9 from t = 9 on); at 0.99 it never would.
EMA_DECAY = 0.9
# SASSNet's discriminator: narrower than the released 64 (the same code at any width), so the
# fixture stays small.
DISC_WIDTH = 8
# BCP's pre-training: the first quarter (5 iterations) instead of the released 2000 / 17000, so
# both stages and the switch between them are compared.
ref.BCP_PRETRAIN_FRACTION = 0.25
# New methods go last: the plan / mask stream is shared, so earlier runs keep their draws.
METHODS = ["dtml", "dtml-released", "dtc", "supervised", "mean-teacher", "ua-mt", "cps", "mc-net", "mc-net-plus", "sassnet", "bcp", "entropy-min"]
DTYPE = torch.float64
# Trajectory mode (see `trajectory`): every iteration also records the norm of
# every state-dict tensor (weights and BN running statistics).
RECORD_NORMS = False


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


def lockstep_noise(t, i, shape):
    """Noise draw i of iteration t: splitmix64 of each element's index (C order of `shape`, the
    batch's (N, 1, x, y, z)) mapped to [-0.25, 0.25) and clamped to +-0.2 as the teacher's noise
    is; exact f64 arithmetic, so `lockstep.rs` makes the same bits."""
    j = np.arange(int(np.prod(shape)), dtype=np.uint64)
    z = (np.uint64(t) << np.uint64(40)) + (np.uint64(i) << np.uint64(32)) + j
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return np.clip((u - 0.5) * 0.5, -0.2, 0.2).reshape(shape)


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
        origin = [int(rng.integers(min(n - p, 0), max(n - p, 0) + 1)) for n, p in zip(shape, PATCH)]
        plan.append({"labelled": labelled, "case": case, "quarter_turns": turns, "flip_axis": flip, "origin": origin})
    return plan


def extra_init(method, init):
    """The initial weights of the method's extra decoders (MC-Net's `aux0`, MC-Net+'s `aux1` too)."""
    n = len(ref.EXTRA_DECODERS.get(method, ()))
    return {k: v for k, v in init[2].items() if any(k.startswith(f"aux{j}.") for j in range(n))}


def run(method, cases, init, rng, tensors, stop=None):
    """Trains `method` for `stop` (default: all) iterations of an ITERATIONS-long schedule."""
    stop = ITERATIONS if stop is None else stop
    labelled, unlabelled = cases[:LABELLED_CASES], cases[LABELLED_CASES:]
    n_lab, n_unl = (LABELLED_BATCH, UNLABELLED_BATCH) if method != "supervised" else (LABELLED_BATCH + UNLABELLED_BATCH, 0)
    if method == "bcp":
        # BCP's passes each see half the labelled or unlabelled patches: 4 + 4 gives them 2 each, where
        # 1 (BatchNorm over one patch's 2 bottleneck voxels) makes PyTorch's own run chaotic at once.
        n_lab, n_unl = 2 * LABELLED_BATCH, 2 * UNLABELLED_BATCH
    nets = []
    for net, state in zip(ref.make_networks(method, WIDTH), init):
        net = net.to(DTYPE)
        # MC-Net's extra decoders start from init_extra.pth.
        net.load_state_dict({**state, **extra_init(method, init)})
        net.train()
        nets.append(net)
    opt = torch.optim.SGD([p for n in ref.trained(method, nets) for p in n.parameters()], lr=LR, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY)
    disc, dopt = None, None
    if method == "sassnet":
        disc = ref.Discriminator(DISC_WIDTH).to(DTYPE)
        disc.load_state_dict(init[3])
        dopt = torch.optim.Adam(disc.parameters(), lr=ref.DISC_LR, betas=ref.DISC_BETAS)
    iterations = []
    for t in range(stop):
        plan = draw_plan(rng, n_lab, n_unl, [c[0].shape for c in labelled], [c[0].shape for c in unlabelled])
        images, labels = [], []
        for e in plan:
            image, label = (labelled if e["labelled"] else unlabelled)[e["case"]]
            images.append(ref.crop(image, e, PATCH))
            if e["labelled"]:
                labels.append(ref.crop(label, e, PATCH))
        x = torch.from_numpy(np.stack(images).astype(np.float64))[:, None].to(DTYPE)
        y = torch.from_numpy(np.stack(labels).astype(np.float64)).to(DTYPE)
        target = torch.from_numpy(np.stack([ref.sdm_target(m) for m in labels])).to(DTYPE)
        n = n_lab + n_unl
        masks = []
        # One mask pair per forward pass: per network, a teacher's on the unlabelled patches only,
        # and UA-MT's Monte-Carlo passes.
        for i, rows in enumerate(ref.pass_rows(method, n_lab, n_unl, t, ITERATIONS)):
            drawn = [torch.from_numpy((rng.random((rows, c)) >= DROPOUT) / (1 - DROPOUT)) for c in ref.mask_channels(method, WIDTH)]
            names = ["bottleneck", "last"] + [f"extra{k}" for k in range(len(drawn) - 2)]
            for name, m in zip(names, drawn):
                tensors[f"{method}.{t}.dropout{i}.{name}"] = m
            masks.append([m.to(DTYPE) for m in drawn])
        # Input noise from a formula the Rust test evaluates bit for bit (UA-MT's would be 12 MB
        # stored); the iteration records the shapes.
        shapes = ref.noise_shapes(method, x, n_lab)
        noise = [torch.from_numpy(lockstep_noise(t, i, s)).to(DTYPE) for i, s in enumerate(shapes)]
        lam, lr = ref.consistency_weight(method) * ref.lambda_at(t, ITERATIONS), ref.lr_at(t, ITERATIONS, LR, method)
        boxes = []
        if method == "bcp" and t == ref.bcp_start(ITERATIONS):
            # Self-training: the teacher from the pre-trained student, a fresh optimizer.
            ref.bcp_copy_teacher(nets)
            opt = torch.optim.SGD(nets[0].parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        if method == "bcp":
            box = ref.bcp_box(rng, PATCH)
            boxes.append(box[0])
            total, parts = ref.bcp_objective(nets, x, y, masks, n_lab, t, ITERATIONS, box)
        else:
            total, parts = ref.objective(method, nets, x, y, target, masks, lam, noise,
                                         ref.ua_mt_threshold(t, ITERATIONS), disc)
        opt.step()
        ref.ema_update(method, nets, t, EMA_DECAY)
        if method == "bcp" and t >= ref.bcp_start(ITERATIONS):
            ref.bcp_ema(nets, EMA_DECAY)
        if disc is not None:
            # The discriminator's dropout masks: the step's next pass.
            i = len(masks)
            drawn = [torch.from_numpy((rng.random((x.shape[0], c)) >= ref.DISC_DROPOUT) / (1 - ref.DISC_DROPOUT))
                     for c in ref.disc_mask_channels(DISC_WIDTH)]
            for k, m in enumerate(drawn):
                tensors[f"{method}.{t}.dropout{i}.disc{k}"] = m
            parts = dict(parts)
            parts["discriminator"] = ref.discriminator_step(nets[0], disc, dopt, x, n_lab, [m.to(DTYPE) for m in drawn])
        iterations.append({
            "plan": plan, "lambda": lam, "lr": lr, "loss": total.item(), "noise": [list(s) for s in shapes],
            "boxes": boxes,
            "parts": {k: v.item() for k, v in parts.items()},
        })
        if RECORD_NORMS:
            iterations[-1]["norms"] = {f"net{i}.{k}": v.double().norm().item() for i, n in enumerate(nets)
                                       for k, v in n.state_dict().items() if "num_batches" not in k}
    if disc is not None:
        for k, v in disc.state_dict().items():
            tensors[f"{method}.disc.norm.{k}"] = v.detach().norm().reshape(1)
            tensors[f"{method}.disc.change.{k}"] = (v.detach() - init[3][k]).norm().reshape(1)
    for i, net in enumerate(nets):
        start = {**init[i], **extra_init(method, init)}
        for k, v in net.state_dict().items():
            if "running" in k:
                tensors[f"{method}.net{i}.{k}"] = v.detach().clone()
            elif "num_batches" not in k:
                tensors[f"{method}.net{i}.norm.{k}"] = v.detach().norm().reshape(1)
                tensors[f"{method}.net{i}.change.{k}"] = (v.detach() - start[k]).norm().reshape(1)
    return iterations


def settings(n_cases, stable_for, runs):
    """What `lockstep.json` holds: the run's settings, the compared iterations and the runs."""
    return {
        "iterations": ITERATIONS, "width": WIDTH, "patch": PATCH, "labelled_batch": LABELLED_BATCH,
        "unlabelled_batch": UNLABELLED_BATCH, "cases": n_cases, "labelled_cases": LABELLED_CASES,
        "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "lr_steps": LR_STEPS,
        "lr_gamma": LR_GAMMA, "sharpness": SHARPNESS, "dropout": DROPOUT, "dtc_beta": DTC_BETA,
        "ema_decay": EMA_DECAY, "discriminator_width": DISC_WIDTH, "pretrain_fraction": ref.BCP_PRETRAIN_FRACTION,
        "stable_iterations": stable_for, "runs": runs,
    }


def setup(out):
    """The students' initial weights (f32, also saved as init_{a,b}.pth), the cases, the plan
    generator and the tensors to save (the cases so far)."""
    torch.manual_seed(2026)
    init = []
    for name in ("a", "b"):
        state = {k: v.float() if v.is_floating_point() else v for k, v in VNet(1, WIDTH, 1).state_dict().items()}
        torch.save(state, f"{out}/init_{name}.pth")
        init.append(state)
    # MC-Net's extra decoders (drawn after both V-Nets, so theirs are unchanged).
    extra = {}
    for k, mode in enumerate(ref.EXTRA_DECODERS["mc-net-plus"]):
        extra.update({f"aux{k}.{n}": v.float() if v.is_floating_point() else v
                      for n, v in ref.ExtraDecoder(WIDTH, mode).state_dict().items()})
    torch.save(extra, f"{out}/init_extra.pth")
    init.append(extra)
    # SASSNet's discriminator (drawn last, so nothing above changes).
    disc = {k: v.float() for k, v in ref.Discriminator(DISC_WIDTH).state_dict().items()}
    torch.save(disc, f"{out}/init_disc.pth")
    init.append(disc)
    rng = np.random.default_rng(11)
    cases = make_cases(rng)
    tensors = {}
    for i, (image, label) in enumerate(cases):
        tensors[f"case{i}.image"] = torch.from_numpy(image)
        tensors[f"case{i}.label"] = torch.from_numpy(label)
    return init, cases, rng, tensors


def trajectory(out, iterations, width, methods):
    """f32 trajectories of a longer run, to see where dtml and PyTorch part (not a fixture):
    the same cases, plans and masks as the lockstep test, PyTorch in f32, and a PyTorch rerun
    from weights scaled by 1 + 1e-6 (about ten f32 rounding steps) as the measure of how fast
    f32 rounding alone makes two correct runs part. `cargo test -p dtml-train --test lockstep
    f32_trajectory -- --ignored --nocapture` with DTML_LOCKSTEP_DIR=out replays dtml beside it."""
    global ITERATIONS, WIDTH, DTYPE, RECORD_NORMS
    ITERATIONS, WIDTH, DTYPE, RECORD_NORMS = iterations, width, torch.float32, True
    os.makedirs(out, exist_ok=True)
    init, cases, rng, tensors = setup(out)
    runs, nudged_runs = {}, {}
    for m in methods:
        before = rng.bit_generator.state
        runs[m] = run(m, cases, init, rng, tensors)
        after = rng.bit_generator.state
        rng.bit_generator.state = before
        nudged = [{k: v * (1 + 1e-6) if v.is_floating_point() else v for k, v in s.items()} for s in init]
        nudged_runs[m] = [{"loss": r["loss"], "norms": r["norms"]} for r in run(m, cases, nudged, rng, {})]
        rng.bit_generator.state = after
    meta = settings(len(cases), {m: ITERATIONS for m in methods}, runs)
    meta["nudged"] = nudged_runs
    with open(f"{out}/lockstep.json", "w") as f:
        json.dump(meta, f)
    save_file({k: v.contiguous() if k.startswith("case") else v.contiguous().double() for k, v in tensors.items()},
              f"{out}/lockstep.safetensors")
    print("wrote", out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--trajectory":
        # --trajectory OUT [ITERATIONS [WIDTH [METHODS]]]
        a = sys.argv[2:]
        return trajectory(a[0], int(a[1]) if len(a) > 1 else 300, int(a[2]) if len(a) > 2 else 4,
                          a[3].split(",") if len(a) > 3 else ["dtml", "supervised"])
    out = sys.argv[1] if len(sys.argv) > 1 else "data-fixtures/lockstep"
    init, cases, rng, tensors = setup(out)
    init = [{k: v.double() if v.is_floating_point() else v for k, v in state.items()} for state in init]
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
    with open(f"{out}/lockstep.json", "w") as f:
        json.dump(settings(len(cases), stable_for, runs), f, indent=1)
    # Cases as the trainer holds them (f32 image, u8 label); goldens in f64.
    save_file({k: v.contiguous() if k.startswith("case") else v.contiguous().double() for k, v in tensors.items()},
              f"{out}/lockstep.safetensors")
    for m in METHODS:
        print(m, stable_for[m], "iterations compared;", " ".join(f"{r['loss']:.6f}" for r in runs[m][::5]))


if __name__ == "__main__":
    main()
