"""Golden values for dtml_model::ops, made with PyTorch (CPU, float32).

Run: /work/torchenv/bin/python data-fixtures/ops/make_ops_fixtures.py
Writes ops.safetensors beside this script. Every case stores its input
`x`, weight `w` (generated here from a fixed seed), a random cotangent `r`,
the output `y` and the gradients `dx`, `dw` of the scalar loss
`sum(y * r)`. Tensors are (N, C, D, H, W) = dtml's (N, C, Z, Y, X), conv
weights (Cout, Cin, kD, kH, kW), transposed-conv weights (Cin, Cout, 2, 2, 2)
as PyTorch stores them; no axis is permuted, so the test proves the layouts
agree. Keys are "<case>.<name>".
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20240604)
torch.set_num_threads(1)
out = {}


def case(name, fn, x_shape, w_shape, w_scale=0.3):
    x = torch.randn(*x_shape, dtype=torch.float32, requires_grad=True)
    w = (torch.randn(*w_shape, dtype=torch.float32) * w_scale).requires_grad_(True)
    y = fn(x, w)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in dict(x=x, w=w, r=r, y=y, dx=x.grad, dw=w.grad).items():
        out[f"{name}.{k}"] = v.detach().contiguous()


case("conv3_p1", lambda x, w: F.conv3d(x, w, padding=1), (2, 3, 4, 5, 6), (4, 3, 3, 3, 3))
case("conv3_p0", lambda x, w: F.conv3d(x, w, padding=0), (2, 2, 4, 5, 6), (3, 2, 3, 3, 3))
case("conv3_odd", lambda x, w: F.conv3d(x, w, padding=1), (1, 4, 3, 7, 19), (7, 4, 3, 3, 3), 0.15)
case("conv3_c32", lambda x, w: F.conv3d(x, w, padding=1), (1, 3, 3, 4, 5), (32, 3, 3, 3, 3))
case("conv5_p2", lambda x, w: F.conv3d(x, w, padding=2), (1, 2, 5, 6, 7), (3, 2, 5, 5, 5), 0.1)
case("conv2_p1", lambda x, w: F.conv3d(x, w, padding=1), (2, 2, 3, 4, 5), (3, 2, 2, 2, 2))
case("down", lambda x, w: F.conv3d(x, w, stride=2), (2, 3, 4, 6, 8), (4, 3, 2, 2, 2))
case("up", lambda x, w: F.conv_transpose3d(x, w, stride=2), (2, 3, 2, 3, 4), (3, 4, 2, 2, 2))
case("conv1", lambda x, w: F.conv3d(x, w), (2, 3, 4, 5, 6), (2, 3, 1, 1, 1))

# Dropout3d: the mask PyTorch drew, recovered from its output, so the Rust
# side can apply the same mask and compare.
x = torch.randn(3, 6, 2, 3, 4)
drop = torch.nn.Dropout3d(p=0.5)
drop.train()
y = drop(x)
mask = (y[:, :, 0, 0, 0] / x[:, :, 0, 0, 0]).round()  # 0 or 2
out["dropout.x"] = x
out["dropout.y"] = y.contiguous()
out["dropout.mask"] = mask.contiguous()

# Up-sampling by 2 (MC-Net's decoders): output and input gradient of sum(y * r).
for name, mode, shape in [("up_trilinear", "trilinear", (2, 3, 3, 4, 5)), ("up_trilinear_one", "trilinear", (1, 2, 1, 2, 3)),
                          ("up_nearest", "nearest", (2, 2, 3, 4, 5))]:
    x = torch.randn(*shape, dtype=torch.float32, requires_grad=True)
    corners = {"align_corners": True} if mode == "trilinear" else {}
    y = F.interpolate(x, scale_factor=2, mode=mode, **corners)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in dict(x=x, r=r, y=y, dx=x.grad).items():
        out[f"{name}.{k}"] = v.detach().contiguous()

# SASSNet's discriminator convolution: kernel 4, stride 2, padding 1.
case("conv4_s2", lambda x, w: F.conv3d(x, w, stride=2, padding=1), (2, 3, 4, 6, 8), (5, 3, 4, 4, 4), 0.15)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops.safetensors")
save_file(out, path)
print(path, os.path.getsize(path), "bytes", len(out), "tensors")
