//! The V-Net's FLOP counts from shapes against PyTorch's FlopCounterMode
//! (`data-fixtures/flops/make_flops_fixture.py`), and the DTML steps'
//! totals the issue quotes (35.5 GFLOP demo, 959 GFLOP paper).

use dtml_model::VNetConfig;
use dtml_model::flops::{vnet_flops, vnet_layers};
use dtml_model::ops::Upsampling;
use std::path::Path;

#[test]
fn counts_equal_pytorchs_flop_counter() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/flops/flops.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let n = |k: &str| case[k].as_u64().unwrap();
        let s: Vec<usize> = case["spatial"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let config = VNetConfig {
            width: n("width") as usize,
            ..Default::default()
        };
        let (forward, both) = vnet_flops(&config, [s[0], s[1], s[2]], n("batch") as usize);
        assert_eq!(
            (forward, both),
            (n("forward"), n("forward_backward")),
            "{case}"
        );
    }
    // Two networks per DTML step.
    let demo = VNetConfig {
        width: 8,
        ..Default::default()
    };
    let (_, step) = vnet_flops(&demo, [32, 48, 48], 4);
    assert_eq!((2 * step) / 100_000_000, 355);
    let paper = VNetConfig::default();
    let (_, step) = vnet_flops(&paper, [80, 112, 112], 2);
    assert_eq!((2 * step) / 1_000_000_000, 959);
}

#[test]
fn layers_are_named_and_extra_decoders_counted() {
    let plain = VNetConfig {
        width: 4,
        ..Default::default()
    };
    let layers = vnet_layers(&plain, [16, 16, 16]);
    // 12 encoder and 9 decoder 3x3x3 convs, 4 down, 4 up, 2 heads.
    assert_eq!(layers.len(), 31);
    assert_eq!(layers[0].name, "block_one.conv.0");
    assert!(!layers[0].input_gradient && layers[1..].iter().all(|l| l.input_gradient));
    assert!(layers.iter().any(|l| l.name == "block_eight_up.conv.0"));
    let mc = VNetConfig {
        extra_decoders: vec![Upsampling::Trilinear],
        ..plain.clone()
    };
    let more = vnet_layers(&mc, [16, 16, 16]);
    // An extra decoder: 4 interpolating 3x3x3 convs, 9 stage convs, 1 head.
    assert_eq!(more.len(), layers.len() + 14);
    assert!(more.iter().any(|l| l.name == "aux0.block_five_up.conv.1"));
}

#[test]
fn the_fma_peak_is_measured_for_every_supported_tier() {
    use dtml_model::peak::{fma_peak, physical_cores};
    use dtml_model::simd::Tier;
    let span = std::time::Duration::from_millis(20);
    for tier in Tier::supported() {
        let p = fma_peak(tier, 1, span).unwrap();
        assert!(p.gflops > 0.1 && p.gflops.is_finite(), "{p:?}");
        assert_eq!((p.tier, p.threads), (tier.name(), 1));
    }
    // A tier this CPU lacks is not measured.
    if let Some(missing) = Tier::ALL.into_iter().find(|t| !t.is_supported()) {
        assert!(fma_peak(missing, 1, span).is_none());
    }
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        assert!(physical_cores().is_some_and(|c| c >= 1));
    }
}
