//! The resolved plans against published numbers (efficientnet-facts.md §1.3, §1.7): parameters to the unit,
//! multiply-adds within 0.5%, and timm's independent activation counts.

use effnet_arch::{account, resolve, variant::VARIANTS, Variant};

fn accounting(name: &str) -> effnet_arch::Accounting {
    account(&resolve(&Variant::by_name(name).unwrap().config()).unwrap())
}

#[test]
fn parameter_counts_equal_the_published_ones_to_the_unit() {
    // torchvision `num_params` (B0..B7), timm (B8, L2, Lite0..4); the table in the facts file.
    let published = [
        ("b0", 5_288_548),
        ("b1", 7_794_184),
        ("b2", 9_109_994),
        ("b3", 12_233_232),
        ("b4", 19_341_616),
        ("b5", 30_389_784),
        ("b6", 43_040_704),
        ("b7", 66_347_960),
        ("b8", 87_413_142),
        ("l2", 480_309_308),
        ("lite0", 4_652_008),
        ("lite1", 5_416_680),
        ("lite2", 6_092_072),
        ("lite3", 8_197_096),
        ("lite4", 13_006_568),
    ];
    assert_eq!(published.len(), VARIANTS.len());
    for (name, params) in published {
        assert_eq!(accounting(name).params, params, "{name}");
        assert_eq!(
            Variant::by_name(name).unwrap().published_params,
            params,
            "{name} metadata"
        );
    }
}

#[test]
fn multiply_adds_are_within_half_a_percent_of_the_reference() {
    // Multiply-adds (conv + FC) at the native resolution, in G (efficientnet-facts.md §1.3).
    let reference = [
        ("b0", 0.386),
        ("b1", 0.687),
        ("b2", 0.994),
        ("b3", 1.827),
        ("b4", 4.394),
        ("b5", 10.266),
        ("b6", 19.068),
        ("b7", 37.746),
        ("b8", 62.597),
        ("l2", 475.70),
    ];
    for (name, gmacs) in reference {
        let got = accounting(name).macs as f64 / 1e9;
        assert!(
            (got / gmacs - 1.0).abs() < 0.005,
            "{name}: {got} G vs {gmacs} G"
        );
    }
    // The paper's Table 2 "FLOPS" (0.39 B for B0, 37 B for B7) are these multiply-adds, rounded.
    assert!((accounting("b0").macs as f64 / 1e9 - 0.39).abs() < 0.005);
}

#[test]
fn activation_counts_match_timms_measured_ones() {
    // timm benchmark `infer_macts` (fvcore, millions of output elements of conv and linear ops).
    for (name, mega) in [("b0", 6.75), ("b4", 49.49), ("b7", 289.94)] {
        let got = accounting(name).activation_count as f64 / 1e6;
        assert!(
            (got / mega - 1.0).abs() < 0.001,
            "{name}: {got} M vs {mega} M"
        );
    }
}

#[test]
fn inference_peak_is_the_largest_live_set_and_bounded_by_the_sum() {
    // B0's largest live set is at block 1's stride-2 depthwise: its input (96x112x112) and output (96x56x56);
    // block 1 has no residual, so its own input is dead by then. f32.
    let a = accounting("b0");
    assert_eq!(
        a.inference_activation_bytes,
        (96 * 112 * 112 + 96 * 56 * 56) * 4
    );
    // B1 (240 px) peaks at the same place, at 120x120 -> 60x60.
    assert_eq!(
        accounting("b1").inference_activation_bytes,
        (96 * 120 * 120 + 96 * 60 * 60) * 4
    );
    assert!(a.training_activation_bytes > a.inference_activation_bytes);
    // Training keeps at least every conv output once, so at least the activation count in f32.
    assert!(a.training_activation_bytes >= a.activation_count * 4);
    // Totals are the sums of the per-layer figures.
    assert_eq!(a.params, a.layers.iter().map(|l| l.params).sum::<u64>());
    assert_eq!(a.macs, a.layers.iter().map(|l| l.macs).sum::<u64>());
}

#[test]
fn weight_bytes_count_bn_running_statistics() {
    let plan = resolve(&Variant::by_name("lite0").unwrap().config()).unwrap();
    let a = account(&plan);
    let bn_channels: u64 = plan
        .layers()
        .iter()
        .filter_map(|l| match l.op {
            effnet_arch::plan::LayerOp::Conv(c) if c.batch_norm => Some(u64::from(c.out_channels)),
            _ => None,
        })
        .sum();
    assert_eq!(a.weight_bytes, (a.params + 2 * bn_channels) * 4);
}
