"""Runs ../shared/reference/peer_dtml_train.py unchanged and keeps what it
trains, so training and inference can be compared stage by stage with dtml
(issue 21):

  peer_cross.py train OUT DATA METHOD ITERS LABELLED SEED [WIDTH] [PATCH]
      trains the reference, writes OUT/peer.json (its printed result) and
      its students' weights OUT/student_a.pth (and OUT/student_b.pth for
      dtml), loadable by `dtml evaluate --model`;
  peer_cross.py score OUT DATA METHOD WIDTH PATCH WEIGHTS...
      scores given weights (dtml's .safetensors or .pth) with the
      reference's own test-time code (windows at half a patch, mean of the
      window probabilities, the dtml ensemble, threshold 0.5, its 6-connected
      largest component) and writes OUT/score.json with per-case Dice and
      predicted / reference volume.

Needs a Python with torch, numpy, scipy, nibabel (and safetensors to read
dtml weights), e.g. a venv outside the repository."""
import json
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "..", "shared", "reference")


def run_peer(argv):
    sys.argv = [os.path.join(REFERENCE, "peer_dtml_train.py")] + argv
    sys.path.insert(0, REFERENCE)
    return runpy.run_path(sys.argv[0], run_name="__main__")


def train(out, data, method, iters, labelled, seed, *rest):
    import torch

    os.makedirs(out, exist_ok=True)
    g = run_peer([data, method, iters, labelled, seed, *rest])
    for net, name in zip(g["nets"], ["student_a", "student_b"]):
        torch.save(net.state_dict(), os.path.join(out, name + ".pth"))
    result = {
        "test_dice_mean": float(sum(g["dices"]) / len(g["dices"])),
        "test_dice": [float(d) for d in g["dices"]],
        "volume": [float(v) for v in volumes(g)],
    }
    json.dump(result, open(os.path.join(out, "peer.json"), "w"), indent=1)


def volumes(g):
    """Predicted / reference foreground per test case, from the peer's own
    predictions (recomputed: the peer keeps only Dice)."""
    return [float(g["predict"](img).sum()) / max(float(y.sum()), 1.0) for img, y in g["test"]]


def load_weights(path):
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu")


def score(out, data, method, width, patch, *weights):
    """The peer's predict() with other weights: the peer trains for 0
    iterations (its nets are then replaced), so only its test code runs."""
    import numpy as np

    os.makedirs(out, exist_ok=True)
    g = run_peer([data, method, "0", "1", "0", width, patch])
    for net, path in zip(g["nets"], weights):
        state = load_weights(path)
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.endswith("num_batches_tracked")]
        if bad or unexpected:
            sys.exit(f"{path}: missing {bad}, unexpected {unexpected}")
    dice, vol = [], []
    for img, y in g["test"]:
        m = g["predict"](img)
        dice.append(float(2 * (m & y).sum() / max(m.sum() + y.sum(), 1)))
        vol.append(float(m.sum()) / max(float(y.sum()), 1.0))
    result = {"weights": list(weights), "test_dice_mean": float(np.mean(dice)),
              "test_dice": dice, "volume": vol}
    json.dump(result, open(os.path.join(out, "score.json"), "w"), indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    {"train": train, "score": score}[sys.argv[1]](*sys.argv[2:])
