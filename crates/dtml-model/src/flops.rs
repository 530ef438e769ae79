//! Floating-point operations of a V-Net pass, counted from the shapes the
//! way PyTorch's `FlopCounterMode` counts them: convolutions (and
//! transposed ones) only, a multiply-add as 2; the backward pass computes
//! the gradient of every convolution's weight and of its input, except the
//! network's input, which needs none. BatchNorm, activations, losses and
//! the optimiser are left out: they are memory-bound and a small share of
//! the arithmetic. These counts turn measured step times into GFLOP/s and
//! a share of the machine's peak (`cargo xtask bench`).

use crate::vnet::VNetConfig;

/// One convolution layer of the network, by its FLOPs per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFlops {
    /// The layer's name in the state dict (`block_two.conv.3`, ...).
    pub name: String,
    /// Forward FLOPs for one sample.
    pub forward: u64,
    /// Whether the backward pass also computes its input's gradient.
    pub input_gradient: bool,
}

impl LayerFlops {
    /// Forward plus backward FLOPs for one sample: the weight gradient
    /// costs what the forward does, and so does the input gradient.
    pub fn forward_backward(&self) -> u64 {
        self.forward * if self.input_gradient { 3 } else { 2 }
    }
}

/// The convolution layers of one V-Net pass over one sample of `spatial`
/// voxels `(Z, Y, X)`, main decoder and heads (extra decoders included).
pub fn vnet_layers(config: &VNetConfig, spatial: [usize; 3]) -> Vec<LayerFlops> {
    let w = config.width as u64;
    let voxels = |level: u32| -> u64 {
        spatial
            .iter()
            .map(|&s| (s >> level) as u64)
            .product::<u64>()
    };
    let mut layers = Vec::new();
    let mut push = |name: String, forward: u64| {
        let input_gradient = !layers.is_empty();
        layers.push(LayerFlops {
            name,
            forward,
            input_gradient,
        });
    };
    const ENCODER: [(&str, usize); 5] = [
        ("block_one", 1),
        ("block_two", 2),
        ("block_three", 3),
        ("block_four", 3),
        ("block_five", 3),
    ];
    const DECODER: [(&str, &str, usize); 4] = [
        ("block_five_up", "block_six", 3),
        ("block_six_up", "block_seven", 3),
        ("block_seven_up", "block_eight", 2),
        ("block_eight_up", "block_nine", 1),
    ];
    let conv3 = |cin: u64, cout: u64, level: u32| 2 * 27 * cin * cout * voxels(level);
    // A 2x2x2 stride-2 conv or its transpose: 8 taps per coarse voxel.
    let resample = |cin: u64, cout: u64, coarse: u32| 2 * 8 * cin * cout * voxels(coarse);
    for (level, (name, convs)) in ENCODER.iter().enumerate() {
        let level = level as u32;
        let c = w << level;
        for i in 0..*convs {
            let cin = if level == 0 && i == 0 {
                config.in_channels as u64
            } else {
                c
            };
            push(format!("{name}.conv.{}", 3 * i), conv3(cin, c, level));
        }
        if level < 4 {
            push(format!("{name}_dw.conv.0"), resample(c, 2 * c, level + 1));
        }
    }
    // The main decoder up-samples by transposed convolution; an extra
    // (MC-Net) decoder interpolates, then convolves 3x3x3 at the finer level.
    let decoder = |prefix: &str, interpolated: bool, push: &mut dyn FnMut(String, u64)| {
        for (u, (up, stage, convs)) in DECODER.iter().enumerate() {
            let coarse = 4 - u as u32;
            let c = w << (coarse - 1);
            if interpolated {
                push(format!("{prefix}{up}.conv.1"), conv3(2 * c, c, coarse - 1));
            } else {
                push(format!("{prefix}{up}.conv.0"), resample(2 * c, c, coarse));
            }
            for i in 0..*convs {
                push(
                    format!("{prefix}{stage}.conv.{}", 3 * i),
                    conv3(c, c, coarse - 1),
                );
            }
        }
    };
    decoder("", false, &mut push);
    let classes = config.classes as u64;
    push("out_conv".into(), 2 * w * classes * voxels(0));
    push("out_conv2".into(), 2 * w * classes * voxels(0));
    for k in 0..config.extra_decoders.len() {
        decoder(&format!("aux{k}."), true, &mut push);
        push(format!("aux{k}.out_conv"), 2 * w * classes * voxels(0));
    }
    layers
}

/// FLOPs of a forward pass and of forward plus backward over `batch`
/// samples of `spatial` `(Z, Y, X)`.
pub fn vnet_flops(config: &VNetConfig, spatial: [usize; 3], batch: usize) -> (u64, u64) {
    let layers = vnet_layers(config, spatial);
    let n = batch as u64;
    (
        n * layers.iter().map(|l| l.forward).sum::<u64>(),
        n * layers.iter().map(LayerFlops::forward_backward).sum::<u64>(),
    )
}
