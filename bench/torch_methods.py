"""The baselines' pieces of dtml's PyTorch reference (`torch_reference.py` imports them all): MC-Net's
interpolating decoders, SASSNet's discriminator and its step, BCP's box, pseudo labels and losses. Kept
apart so neither file grows past what one reads at once; each is written from its method's spec in
docs/methods/."""
import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage as ndi

from make_vnet_fixture import Stage, VNet  # noqa: F401  (on the path torch_reference.py sets)

# MC-Net's extra decoders: MC-Net's trilinear one, MC-Net+'s trilinear and nearest ones.
EXTRA_DECODERS = {"mc-net": ("trilinear",), "mc-net-plus": ("trilinear", "nearest")}
# SASSNet's discriminator: width 64, Adam(1e-4, betas (0.9, 0.99)), dropout 0.5.
DISC_WIDTH, DISC_LR, DISC_BETAS, DISC_DROPOUT = 64, 1e-4, (0.9, 0.99), 0.5


class InterpolatingUp(nn.Module):
    """MC-Net's Upsampling_function with interpolation: Upsample x2, Conv3d 3x3x3, BN, ReLU."""

    def __init__(self, cin, cout, mode):
        super().__init__()
        up = nn.Upsample(scale_factor=2, mode=mode, align_corners=True) if mode == "trilinear" else nn.Upsample(
            scale_factor=2, mode=mode)
        self.conv = nn.Sequential(up, nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class ExtraDecoder(nn.Module):
    """A second decoder on the V-Net's encoder (MC-Net's decoder2), named as dtml's `aux0.`."""

    def __init__(self, f, mode="trilinear", classes=1):
        super().__init__()
        self.block_five_up = InterpolatingUp(16 * f, 8 * f, mode)
        self.block_six = Stage(3, 8 * f, 8 * f)
        self.block_six_up = InterpolatingUp(8 * f, 4 * f, mode)
        self.block_seven = Stage(3, 4 * f, 4 * f)
        self.block_seven_up = InterpolatingUp(4 * f, 2 * f, mode)
        self.block_eight = Stage(2, 2 * f, 2 * f)
        self.block_eight_up = InterpolatingUp(2 * f, f, mode)
        self.block_nine = Stage(1, f, f)
        self.out_conv = nn.Conv3d(f, classes, 1)


class McNet(VNet):
    """MC-Net's network: the V-Net (encoder, its transposed-conv decoder and heads) plus `aux0`
    (trilinear) and, for MC-Net+, `aux1` (nearest)."""

    def __init__(self, cin=1, f=16, classes=1, modes=("trilinear",)):
        super().__init__(cin, f, classes)
        self.modes = modes
        for k, mode in enumerate(modes):
            setattr(self, f"aux{k}", ExtraDecoder(f, mode, classes))


def mc_forward(net, x, masks):
    """Train-mode MC-Net forward: both decoders' segmentation logits; the bottleneck's dropout mask
    once for both (MC-Net's encoder dropout), then each decoder's own on its last stage."""
    x1 = net.block_one(x)
    x2 = net.block_two(net.block_one_dw(x1))
    x3 = net.block_three(net.block_two_dw(x2))
    x4 = net.block_four(net.block_three_dw(x3))
    x5 = net.block_five(net.block_four_dw(x4)) * masks[0][:, :, None, None, None]
    outs = []
    decoders = [(net, masks[1], "out_conv2")] + [(getattr(net, f"aux{k}"), masks[2 + k], "out_conv")
                                                 for k in range(len(net.modes))]
    for d, mask, head in decoders:
        h = d.block_six(d.block_five_up(x5) + x4)
        h = d.block_seven(d.block_six_up(h) + x3)
        h = d.block_eight(d.block_seven_up(h) + x2)
        h = d.block_nine(d.block_eight_up(h) + x1) * mask[:, :, None, None, None]
        outs.append(getattr(d, head)(h)[:, 0])
    return outs


class Discriminator(nn.Module):
    """SASSNet's FC3DDiscriminator; its AvgPool3d((7, 7, 5)), the mean over the remaining voxels at the
    paper's patch, is that mean at every patch size. `masks`: keep-masks of the three dropout layers
    (training), or None (evaluation)."""

    def __init__(self, ndf=DISC_WIDTH):
        super().__init__()
        self.conv0 = nn.Conv3d(1, ndf, 4, stride=2, padding=1)
        self.conv1 = nn.Conv3d(1, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv3d(ndf, 2 * ndf, 4, stride=2, padding=1)
        self.conv3 = nn.Conv3d(2 * ndf, 4 * ndf, 4, stride=2, padding=1)
        self.conv4 = nn.Conv3d(4 * ndf, 8 * ndf, 4, stride=2, padding=1)
        self.classifier = nn.Linear(8 * ndf, 2)

    def forward(self, sdm, image, masks=None):
        leaky = nn.functional.leaky_relu
        h = self.conv0(sdm) + self.conv1(image)
        for k, conv in enumerate((self.conv2, self.conv3, self.conv4)):
            h = leaky(h, 0.2)
            if masks is not None:
                h = h * masks[k][:, :, None, None, None]
            h = conv(h)
        return self.classifier(leaky(h, 0.2).mean(dim=(2, 3, 4)))


def disc_mask_channels(ndf):
    return (ndf, 2 * ndf, 4 * ndf)


def discriminator_step(net, disc, dopt, x, n_lab, masks):
    """After the V-Net's update: its maps of the whole batch in evaluation mode, the discriminator in
    training mode (dropout `masks`) against [labelled = 1, unlabelled = 0], one Adam step."""
    net.eval()
    with torch.no_grad():
        sdm, _ = net(x)
    net.train()
    target = torch.tensor([1] * n_lab + [0] * (x.shape[0] - n_lab))
    loss = nn.functional.cross_entropy(disc(sdm, x, masks), target)
    dopt.zero_grad()
    loss.backward()
    dopt.step()
    return loss


def bcp_mask(patch, origin, size, dtype):
    """Ones with the box zero, shaped (x, y, z)."""
    m = torch.ones(patch, dtype=dtype)
    m[origin[0]:origin[0] + size[0], origin[1]:origin[1] + size[1], origin[2]:origin[2] + size[2]] = 0
    return m


def largest_cc(hard):
    """Each patch's largest 26-connected component (skimage's label default, as released); empty stays empty."""
    out = np.zeros_like(hard)
    for i, m in enumerate(hard):
        labels, n = ndi.label(m, np.ones((3, 3, 3)))
        if n > 0:
            out[i] = labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
    return out


def bcp_dice(z, y, m):
    """The released mask_DiceLoss on one logit: per patch and class (2 p y m + 1e-5) / ((p + y) m + 1e-5)."""
    p = torch.sigmoid(z)
    dice = []
    for pc, yc in ((p, y), (1 - p, 1 - y)):
        inter = (pc * yc * m).flatten(1).sum(1)
        union = ((pc + yc) * m).flatten(1).sum(1)
        dice.append((2 * inter + 1e-5) / (union + 1e-5))
    return 1 - torch.cat(dice).mean()


def bcp_ce(z, y, m):
    ce = nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (ce * m).sum() / (m.expand_as(ce).sum() + 1e-16)


def bcp_mix_loss(z, image_label, patch_label, m, image_weight, patch_weight):
    inside = 1 - m
    dice = bcp_dice(z, image_label, m) * image_weight + bcp_dice(z, patch_label, inside) * patch_weight
    ce = bcp_ce(z, image_label, m) * image_weight + bcp_ce(z, patch_label, inside) * patch_weight
    return (dice + ce) / 2


def bcp_copy_teacher(nets):
    """At the first self-training step the teacher becomes the pre-trained student, statistics and all."""
    nets[1].load_state_dict(nets[0].state_dict())


def bcp_ema(nets, decay):
    """BCP's teacher update: a fixed factor, parameters only."""
    with torch.no_grad():
        for tp, sp in zip(nets[1].parameters(), nets[0].parameters()):
            tp.mul_(decay).add_((1 - decay) * sp)
