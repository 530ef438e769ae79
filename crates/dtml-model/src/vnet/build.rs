//! Building a V-Net: its layers, named as the reference's state dict, with
//! weights drawn by the chosen initialisation, and any extra decoders.

use super::*;

pub(super) struct Builder<'a> {
    rng: ChaCha8Rng,
    init: Init,
    dtype: DType,
    device: &'a Device,
    config: &'a VNetConfig,
    vars: BTreeMap<String, Var>,
}

impl Builder<'_> {
    fn var(&mut self, name: String, t: Tensor) -> candle_core::Result<Var> {
        let v = Var::from_tensor(&t)?;
        self.vars.insert(name, v.clone());
        Ok(v)
    }

    fn conv(
        &mut self,
        prefix: &str,
        kind: Kind,
        cin: usize,
        cout: usize,
    ) -> candle_core::Result<Conv> {
        let (shape, kernel) = match kind {
            Kind::Conv3 => (vec![cout, cin, 3, 3, 3], 27),
            Kind::Down => (vec![cout, cin, 2, 2, 2], 8),
            // PyTorch computes a transposed conv's fans from dims 1 and 0.
            Kind::Up => (vec![cin, cout, 2, 2, 2], 8),
            Kind::Conv1 => (vec![cout, cin, 1, 1, 1], 1),
        };
        let (fan_in, fan_out) = (shape[1] * kernel, shape[0] * kernel);
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = match kind {
            Kind::Up => Init::PyTorch,
            _ => self.init,
        };
        let w = init.conv_weight(
            &mut self.rng,
            &shape,
            (fan_in, fan_out),
            self.dtype,
            self.device,
        )?;
        let b = uniform(&mut self.rng, &[cout], bound, self.dtype, self.device)?;
        Ok(Conv {
            kind,
            weight: self.var(format!("{prefix}.weight"), w)?,
            bias: self.var(format!("{prefix}.bias"), b)?,
        })
    }

    fn layer(
        &mut self,
        prefix: &str,
        index: usize,
        kind: Kind,
        cin: usize,
        cout: usize,
    ) -> candle_core::Result<Layer> {
        let conv = self.conv(&format!("{prefix}.conv.{index}"), kind, cin, cout)?;
        let bn = format!("{prefix}.conv.{}", index + 1);
        let ones = Tensor::ones(cout, self.dtype, self.device)?;
        let zeros = Tensor::zeros(cout, self.dtype, self.device)?;
        let mean = self.var(format!("{bn}.running_mean"), zeros.clone())?;
        let var = self.var(format!("{bn}.running_var"), ones.clone())?;
        let weight = self.var(format!("{bn}.weight"), ones)?;
        let bias = self.var(format!("{bn}.bias"), zeros)?;
        Ok(Layer {
            conv,
            gamma: weight,
            beta: bias,
            running_mean: mean,
            running_var: var,
            eps: self.config.bn_eps,
            momentum: self.config.bn_momentum,
        })
    }
}

impl VNet {
    /// A V-Net with PyTorch's default initialisation drawn from `seed`.
    pub fn new(config: VNetConfig, seed: u64, dtype: DType, device: &Device) -> Result<VNet> {
        VNet::with_init(config, Init::PyTorch, seed, dtype, device)
    }

    /// A V-Net whose convolution weights start as `init` says, drawn from
    /// `seed`.
    pub fn with_init(
        config: VNetConfig,
        init: Init,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<VNet> {
        config.validate()?;
        let mut b = Builder {
            rng: ChaCha8Rng::seed_from_u64(seed),
            init,
            dtype,
            device,
            config: &config,
            vars: BTreeMap::new(),
        };
        let f = config.width;
        let mut stages = Vec::new();
        for (s, name) in STAGES.iter().enumerate() {
            let cout = WIDTHS[s] * f;
            let mut layers = Vec::new();
            for i in 0..DEPTHS[s] {
                let cin = if i > 0 {
                    cout
                } else if s == 0 {
                    config.in_channels
                } else {
                    cout
                };
                layers.push(b.layer(name, 3 * i, Kind::Conv3, cin, cout)?);
            }
            stages.push(Block { layers });
        }
        let mut downs = Vec::new();
        for (i, name) in DOWNS.iter().enumerate() {
            downs.push(b.layer(name, 0, Kind::Down, WIDTHS[i] * f, WIDTHS[i + 1] * f)?);
        }
        let mut ups = Vec::new();
        for (i, name) in UPS.iter().enumerate() {
            ups.push(b.layer(name, 0, Kind::Up, WIDTHS[4 + i] * f, WIDTHS[5 + i] * f)?);
        }
        let out_sdm = b.conv("out_conv", Kind::Conv1, f, config.classes)?;
        let out_seg = b.conv("out_conv2", Kind::Conv1, f, config.classes)?;
        let mut extra = Vec::new();
        for (k, &mode) in config.extra_decoders.iter().enumerate() {
            // `aux{k}.` + MC-Net's decoder names: an up-sampling block's
            // interpolation is its module 0, the convolution 1, BatchNorm 2.
            let name = |block: &str| format!("aux{k}.{block}");
            let mut ups = Vec::new();
            let mut stages = Vec::new();
            for (i, up) in UPS.iter().enumerate() {
                let (cin, cout) = (WIDTHS[4 + i] * f, WIDTHS[5 + i] * f);
                ups.push(b.layer(&name(up), 1, Kind::Conv3, cin, cout)?);
                let s = 5 + i;
                let layers = (0..DEPTHS[s])
                    .map(|j| b.layer(&name(STAGES[s]), 3 * j, Kind::Conv3, cout, cout))
                    .collect::<candle_core::Result<_>>()?;
                stages.push(Block { layers });
            }
            let out_seg = b.conv(&name("out_conv"), Kind::Conv1, f, config.classes)?;
            extra.push(ExtraDecoder {
                mode,
                ups,
                stages,
                out_seg,
            });
        }
        let vars = b.vars;
        Ok(VNet {
            config,
            device: device.clone(),
            dtype,
            stages,
            downs,
            ups,
            out_sdm,
            out_seg,
            extra,
            vars,
            batches_tracked: AtomicU64::new(0),
        })
    }
}
