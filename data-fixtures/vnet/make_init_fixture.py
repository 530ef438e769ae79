"""Statistics of PyTorch's default initialisation of the V-Net, per tensor
of the state dict, for dtml's initialisation test (issue 21).

Run from the repository root with a Python that has torch:
    python data-fixtures/vnet/make_init_fixture.py
Writes `init_stats.json`: for the paper-width V-Net (width 16) built by
`make_vnet_fixture.VNet` under `torch.manual_seed(0)`, every tensor's shape,
element count, mean, population standard deviation and largest absolute
value, and for each conv / transposed conv the bound PyTorch draws from,
`1 / sqrt(fan_in)` with fan-in as `torch.nn.init` computes it (from dim 1
for a transposed conv's `(Cin, Cout, k, k, k)` weight). BatchNorm tensors
record their initial state (weight 1, bias 0, running mean 0, running
variance 1, no batches tracked).

`schemes` records the two re-initialisations the released cross pseudo
supervision code (SSL4MIS) gives its two networks, applied as it applies them
(to every `nn.Conv3d` weight, which a transposed convolution is not):
`kaiming_normal_` and `xavier_normal_`, each weight's population standard
deviation and the standard deviation the scheme draws from."""
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_vnet_fixture import VNet  # noqa: E402

torch.manual_seed(0)
net = VNet(1, 16, 1)
bounds = {}
for name, module in net.named_modules():
    if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
        bounds[name + ".weight"] = bounds[name + ".bias"] = 1.0 / math.sqrt(fan_in)
stats = {}
for name, t in net.state_dict().items():
    t = t.double()
    stats[name] = {
        "shape": list(t.shape),
        "numel": t.numel(),
        "mean": float(t.mean()),
        "std": float(t.std(unbiased=False)) if t.numel() > 0 else 0.0,
        "max_abs": float(t.abs().max()),
        "bound": bounds.get(name),
    }
schemes = {}
for scheme, init in (("kaiming_normal", torch.nn.init.kaiming_normal_), ("xavier_normal", torch.nn.init.xavier_normal_)):
    torch.manual_seed(1)
    other = VNet(1, 16, 1)
    drawn = {}
    for name, module in other.named_modules():
        if isinstance(module, torch.nn.Conv3d):
            init(module.weight)
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
            want = math.sqrt(2.0 / fan_in) if scheme == "kaiming_normal" else math.sqrt(2.0 / (fan_in + fan_out))
            w = module.weight.detach().double()
            drawn[name + ".weight"] = {"numel": w.numel(), "mean": float(w.mean()), "std": float(w.std(unbiased=False)),
                                       "scheme_std": want}
    schemes[scheme] = drawn
with open(os.path.join(HERE, "init_stats.json"), "w") as f:
    json.dump({"torch": torch.__version__, "width": 16, "tensors": stats, "schemes": schemes}, f, indent=1,
              sort_keys=True)
print("wrote", len(stats), "tensors")
