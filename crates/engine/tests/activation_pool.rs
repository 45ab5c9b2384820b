//! The activation pool: allocated during the first batch, reused by every later one, and no larger than the
//! plan's activations for the batch. (The only test in this binary, so no other test shares the process's
//! pool.)

use effnet_arch::{account, resolve, Variant};
use effnet_engine::{activation_pool_bytes, Engine, FeatureMap};
use effnet_weights::random::RandomWeights;

#[test]
fn later_batches_allocate_nothing_and_the_pool_stays_within_the_plan() {
    let plan = resolve(&Variant::by_name("b0").unwrap().config()).unwrap();
    let engine = Engine::new(&plan, RandomWeights::new(&plan, 0));
    let r = plan.resolution() as usize;
    let image = FeatureMap::new(&vec![0.5; r * r * 3], r, r, 3);
    let activations = account(&plan).inference_activation_bytes as usize;
    let run = |images: &[FeatureMap]| {
        for logits in engine.logits_batch(images) {
            logits.unwrap();
        }
    };
    // On one thread the requests come in the same order every batch: after the first, none is new.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for batch in [1, 4] {
        let images = vec![image.clone(); batch];
        one.install(|| run(&images));
        let after_first = activation_pool_bytes();
        for _ in 0..3 {
            one.install(|| run(&images));
        }
        assert_eq!(
            activation_pool_bytes(),
            after_first,
            "batch {batch}: later batches allocate nothing"
        );
        assert!(after_first <= batch * activations, "batch {batch}");
    }
    // On two threads their requests interleave differently from batch to batch, and an image split across
    // both keeps partial results per thread; the pool still holds no more than the plan's activations of
    // as many images as the batch has, or as there are threads.
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for batch in [1, 2, 4] {
        let images = vec![image.clone(); batch];
        for _ in 0..5 {
            two.install(|| run(&images));
        }
        let pool = activation_pool_bytes();
        assert!(
            pool <= batch.max(2) * activations,
            "batch {batch}: pool {pool} bytes > plan {} bytes",
            batch.max(2) * activations
        );
    }
}
