"""Golden FLOP counts of the V-Net, from PyTorch's own counter.

Run from the repository root with a Python that has torch:
    python data-fixtures/flops/make_flops_fixture.py
For each case, the V-Net of `data-fixtures/vnet` (the UA-MT / DTC / DTML
family) runs forward on a batch and backward from the sum of its two
heads, on the meta device (shapes only), inside
`torch.utils.flop_counter.FlopCounterMode`; `flops.json` records the
forward total and the forward + backward total. `dtml_model::flops`
must give the same numbers from the shapes alone.
"""
import json
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "vnet"))
from make_vnet_fixture import VNet  # noqa: E402

CASES = [
    # width, batch, spatial (the network's three spatial axes)
    dict(width=8, batch=4, spatial=[32, 48, 48]),  # the demo step's patch, per network
    dict(width=16, batch=2, spatial=[80, 112, 112]),  # the paper's
    dict(width=4, batch=1, spatial=[16, 32, 48]),
]


def count(width, batch, spatial):
    net = VNet(cin=1, f=width).to("meta").train()
    x = torch.empty(batch, 1, *spatial, device="meta")
    with FlopCounterMode(display=False) as forward:
        sdm, seg = net(x)
    forward_flops = forward.get_total_flops()
    with FlopCounterMode(display=False) as both:
        sdm, seg = net(x)
        (sdm.sum() + seg.sum()).backward()
    return forward_flops, both.get_total_flops()


out = []
for case in CASES:
    f, fb = count(**case)
    out.append(dict(case, forward=f, forward_backward=fb))
    print(case, f"{f / 1e9:.3f} GFLOP forward, {fb / 1e9:.3f} forward + backward")
with open(os.path.join(HERE, "flops.json"), "w") as fh:
    json.dump(dict(torch=torch.__version__, cases=out), fh, indent=1)
    fh.write("\n")
