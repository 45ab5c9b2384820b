//! Multi-scale feature maps against the independent numpy float64 reference (`tools/reference.py`, fixture
//! `fixtures/reference_features.safetensors`): every value of every level within 1e-4 absolute, at timm's
//! bottleneck and expansion locations.

mod common;

use common::{hash_input, lite0, random_engine, root};
use effnet_arch::features::FeatureLocation;
use effnet_arch::Padding;
use effnet_engine::{Engine, FeatureMap};
use effnet_weights::safetensors_io::read_safetensors;

const TOLERANCE: f32 = 1e-4;

fn check_levels(label: &str, engine: &Engine, input: &FeatureMap, location: FeatureLocation) {
    let reference = read_safetensors(&root().join("fixtures/reference_features.safetensors"))
        .unwrap()
        .tensors;
    let location_name = match location {
        FeatureLocation::Bottleneck => "bottleneck",
        FeatureLocation::Expansion => "expansion",
    };
    let levels = engine.feature_levels(location).len();
    assert_eq!(levels, 5, "{label}: five levels, strides 2 to 32");
    let indices: Vec<usize> = (0..levels).collect();
    let maps = engine.features(input, &indices, location).unwrap();
    for (level, map) in maps.iter().enumerate() {
        let want = &reference[&format!("{label}.{location_name}.{level}")];
        assert_eq!(
            want.shape,
            vec![map.height, map.width, map.channels],
            "{label} {location_name} level {level}: shape"
        );
        assert_eq!(
            map.channels as u32,
            engine.feature_levels(location)[level].num_chs,
            "{label} level {level}: feature_info channels"
        );
        let worst = map
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= TOLERANCE,
            "{label} {location_name} level {level}: max |diff| {worst:e}"
        );
    }
}

#[test]
fn real_lite0_levels_match_the_reference() {
    check_levels(
        "lite0",
        &lite0(),
        &hash_input(64),
        FeatureLocation::Bottleneck,
    );
}

#[test]
fn random_b0_levels_match_the_reference_at_both_locations() {
    let engine = random_engine("b0", Padding::Symmetric, 1e-5);
    check_levels("b0", &engine, &hash_input(48), FeatureLocation::Bottleneck);
    check_levels("b0", &engine, &hash_input(48), FeatureLocation::Expansion);
}

#[test]
fn levels_come_back_in_the_order_asked_and_a_missing_level_is_refused() {
    let engine = random_engine("b0", Padding::Symmetric, 1e-5);
    let input = hash_input(48);
    let all = engine
        .features(&input, &[0, 1, 2, 3, 4], FeatureLocation::Bottleneck)
        .unwrap();
    let picked = engine
        .features(&input, &[4, 1, 4], FeatureLocation::Bottleneck)
        .unwrap();
    assert_eq!(picked[0], all[4]);
    assert_eq!(picked[1], all[1]);
    assert_eq!(picked[2], all[4]);
    let err = engine
        .features(&input, &[5], FeatureLocation::Bottleneck)
        .unwrap_err();
    assert!(err.to_string().contains("levels 0..=4"), "{err}");
}
