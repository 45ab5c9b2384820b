//! The budget solver against a brute-force walk of the same `phi` grid.

use effnet_arch::memory::{RECIPE_PARAMETER_COPIES, RUNTIME_BYTES};
use effnet_arch::solver::{fit, Budget, TrainingBudget, PHI_STEP};
use effnet_arch::{account, resolve, scaling::compound, Accounting, Coefficients, Variant};

fn b0() -> effnet_arch::NetworkConfig {
    Variant::by_name("b0").unwrap().config()
}

fn macs_at(phi: f64) -> u64 {
    account(&resolve(&compound(&b0(), phi, Coefficients::default()).unwrap()).unwrap()).macs
}

#[test]
fn fit_1_8g_returns_the_largest_admissible_phi_on_the_grid() {
    let budget = Budget {
        max_macs: Some(1_800_000_000),
        ..Budget::default()
    };
    let f = fit(&b0(), Coefficients::default(), &budget).unwrap();
    assert!(
        f.best.accounting.macs <= 1_800_000_000,
        "{}",
        f.best.accounting.macs
    );
    let next = f.next.as_ref().expect("the grid goes on above 1.8 G");
    assert!(next.accounting.macs > 1_800_000_000);
    assert!((next.phi - f.best.phi - PHI_STEP).abs() < 1e-9);
    // Brute force: no larger phi on the grid, up to 1.5 above the answer, fits.
    let k0 = (f.best.phi / PHI_STEP).round() as i64;
    for k in k0 + 1..=k0 + 1500 {
        let phi = k as f64 * PHI_STEP;
        assert!(macs_at(phi) > 1_800_000_000, "phi {phi} also fits");
    }
    // The answer is between B2 (phi ~1) and B3 (phi ~2) and sits on the grid.
    assert!(f.best.phi > 1.0 && f.best.phi < 2.2, "{}", f.best.phi);
    assert!(((f.best.phi / PHI_STEP).round() * PHI_STEP - f.best.phi).abs() < 1e-9);
    let names: Vec<&str> = f.fitting_variants.iter().map(|(v, _)| v.name).collect();
    assert_eq!(names, ["b0", "b1", "b2"], "B3 needs 1.827 G");
}

#[test]
fn cost_is_a_non_decreasing_step_function_of_phi() {
    let mut last = 0;
    for k in -2000..=6000 {
        if k % 7 != 0 {
            continue;
        }
        let macs = macs_at(k as f64 * PHI_STEP);
        assert!(macs >= last, "MACs fell at phi {}", k as f64 * PHI_STEP);
        last = macs;
    }
}

#[test]
fn every_budget_binds() {
    let params = Budget {
        max_params: Some(8_000_000),
        ..Budget::default()
    };
    let f = fit(&b0(), Coefficients::default(), &params).unwrap();
    assert!(f.best.accounting.params <= 8_000_000 && f.next.unwrap().accounting.params > 8_000_000);

    let memory = Budget {
        max_memory: Some(64 << 20),
        ..Budget::default()
    };
    let f = fit(&b0(), Coefficients::default(), &memory).unwrap();
    assert!(f.best.accounting.process_memory_bytes() <= 64 << 20);
    assert!(f.next.unwrap().accounting.process_memory_bytes() > 64 << 20);
    assert_eq!(
        f.best.accounting.process_memory_bytes(),
        f.best.accounting.inference_memory_bytes() + RUNTIME_BYTES
    );

    let training = Budget {
        max_train_memory: Some(TrainingBudget {
            max_bytes: 1 << 30,
            batch: 16,
        }),
        ..Budget::default()
    };
    let f = fit(&b0(), Coefficients::default(), &training).unwrap();
    let needed = |a: &Accounting| a.training_memory_bytes(16, RECIPE_PARAMETER_COPIES);
    assert!(needed(&f.best.accounting) <= 1 << 30);
    assert!(needed(&f.next.unwrap().accounting) > 1 << 30);

    let both = Budget {
        max_macs: Some(4_000_000_000),
        max_params: Some(8_000_000),
        ..Budget::default()
    };
    let f = fit(&b0(), Coefficients::default(), &both).unwrap();
    assert!(f.best.accounting.params <= 8_000_000 && f.best.accounting.macs <= 4_000_000_000);
}

#[test]
fn impossible_budgets_name_the_smallest_networks_cost() {
    let tiny = Budget {
        max_macs: Some(1000),
        ..Budget::default()
    };
    let err = fit(&b0(), Coefficients::default(), &tiny)
        .unwrap_err()
        .to_string();
    assert!(err.contains("smallest") && err.contains("MACs"), "{err}");
    assert!(fit(&b0(), Coefficients::default(), &Budget::default()).is_err());
    let bad = Coefficients {
        beta: 0.5,
        ..Coefficients::default()
    };
    assert!(fit(&b0(), bad, &tiny)
        .unwrap_err()
        .to_string()
        .contains("beta"));
}

#[test]
fn lite_fits_compare_against_lite_variants() {
    let lite0 = Variant::by_name("lite0").unwrap().config();
    let budget = Budget {
        max_macs: Some(1_000_000_000),
        ..Budget::default()
    };
    let f = fit(&lite0, Coefficients::default(), &budget).unwrap();
    let names: Vec<&str> = f.fitting_variants.iter().map(|(v, _)| v.name).collect();
    assert_eq!(names, ["lite0", "lite1", "lite2"]);
}
