//! Parity with the reference (scripts/make_reference.py --only init): covariances and spectra
//! against a PyTorch implementation of algorithm.md, PiSSA / OLoRA / CorDA factors against PEFT's
//! own initialisers, MiLoRA and LoRA-Null against PyTorch written from algorithm.md.

use std::sync::OnceLock;

use lora_null::calib::{CovarianceAccumulator, Covariances, Normalization};
use lora_null::linalg::Matrix;
use lora_null::linalg::decompose::{eigh, svd};
use lora_null::linalg::init::{InitFactors, null_basis};
use lora_null::linalg::jobs::{JobOutput, run};
use lora_null::linalg::spectra::activation_energy;
use lora_null::lora::InitMethod;
use lora_null::lora::init::factors_job;
use lora_null::model::weights::read_matrix;
use lora_null::model::{Site, Target};

use crate::adapters::tiny;
use crate::common::*;

fn reference() -> &'static serde_json::Value {
    static R: OnceLock<serde_json::Value> = OnceLock::new();
    R.get_or_init(|| json("tiny/init/reference.json"))
}

fn matrix(v: &serde_json::Value) -> Matrix {
    let rows: Vec<Vec<f64>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    Matrix::from_vec(rows.len(), rows[0].len(), rows.concat()).unwrap()
}

fn site_name(site: Site) -> &'static str {
    site.name()
}

/// The factors a job computed.
fn factors(out: JobOutput) -> InitFactors {
    match out {
        JobOutput::Factors(f) => f,
        other => panic!("expected factors, got {other:?}"),
    }
}

/// The covariance is accumulated in f32 on the device and the reference in f64: ~1e-7 relative
/// observed; 1e-4 flags any real difference (a wrong normalisation moves it by O(1)).
const COVARIANCE_REL_TOL: f64 = 1e-4;
/// PEFT's factors in f32 against ours from f64 decompositions of the same weights: ~1e-6 of the
/// largest entry observed; 2e-4 of it still catches a wrong triplet or scale.
const FACTOR_REL_TOL: f64 = 2e-4;
/// The residual's Frobenius norm, computed from f32 on both sides.
const RESIDUAL_NORM_REL_TOL: f64 = 1e-4;
/// The one residual stored in full, entry by entry.
const RESIDUAL_ABS_TOL: f64 = 1e-5;
/// Held-out energy of the null subspace: ours and the reference's P come from slightly different
/// covariances (f32 vs f64 accumulation); 10% of a ~1e-2 share is far below the gap to the top
/// subspace's share (~1e-1).
const HELDOUT_ENERGY_REL_TOL: f64 = 0.10;
/// Rounding allowance added to the perturbation bounds below (f64 decompositions of matrices
/// of norm ~10).
const EIGEN_ROUNDING: f64 = 1e-9;
/// Eigenvectors from an f64 eigh are orthonormal to ~1e-14; 1e-10 still flags a wrong basis.
const ORTHONORMAL_TOL: f64 = 1e-10;
/// The reference stores C and P with 8 significant digits: up to 5e-9 relative per entry.
const STORED_REL: f64 = 5e-9;

fn windows(key: &str) -> Vec<Vec<u32>> {
    reference()[key].as_array().unwrap().iter().map(ids).collect()
}

fn our_covariances() -> &'static Covariances {
    static C: OnceLock<Covariances> = OnceLock::new();
    C.get_or_init(|| {
        let m = tiny();
        let mut acc = CovarianceAccumulator::new(Site::ALL.to_vec(), Normalization::SignedMax);
        for w in windows("calib_windows") {
            acc.run_window(&m.model, &w);
        }
        pollster::block_on(acc.finish()).unwrap()
    })
}

#[test]
fn covariances_match_the_reference_within_1e_4_relative() {
    let ours = our_covariances();
    assert_eq!(ours.windows, 6);
    for ((layer, site), stats) in &ours.sites {
        let want = matrix(&reference()["covariances"][format!("{layer}.{}", site_name(*site))]);
        let rel = stats.covariance.sub(&want).max_abs() / want.max_abs();
        assert!(
            rel < COVARIANCE_REL_TOL,
            "layer {layer} {site:?}: relative difference {rel}"
        );
    }
}

/// ‖M‖₂ (the largest singular value).
fn spectral_norm(m: &Matrix) -> f64 {
    svd(m).unwrap().s[0]
}

#[test]
fn every_eigenvalue_matches_the_reference_within_the_weyl_bound() {
    // Weyl: |λᵢ(C) − λᵢ(C_ref)| ≤ ‖C − C_ref‖₂ for every i, the smallest (the null space) too.
    for ((layer, site), stats) in &our_covariances().sites {
        let ours = eigh(&stats.covariance).unwrap().values;
        let key = format!("{layer}.{}", site_name(*site));
        let want: Vec<f64> = reference()["eigenvalues"][&key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), want.len(), "{key}: spectrum length");
        let bound = covariance_distance(&stats.covariance, &key) + EIGEN_ROUNDING;
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= bound,
                "{key} eigenvalue {i}: {a} vs {b}, beyond the Weyl bound {bound:e}"
            );
        }
    }
}

/// ‖C − C_ref‖₂, plus what the reference's 8-digit storage may hide (n·5e-9·max|C_ref|, a bound
/// on the spectral norm of the rounding).
fn covariance_distance(c: &Matrix, site_key: &str) -> f64 {
    let c_ref = matrix(&reference()["covariances"][site_key]);
    spectral_norm(&c.sub(&c_ref)) + c.rows as f64 * STORED_REL * c_ref.max_abs()
}

/// Sines of the principal angles between the column spaces of orthonormal `p` and `q`: the
/// singular values of (I − QQᵀ)P.
fn max_principal_sine(p: &Matrix, q: &Matrix) -> f64 {
    let residual = p.sub(&q.matmul(&q.t().matmul(p)));
    spectral_norm(&residual)
}

#[test]
fn lora_null_factors_and_null_space_match_the_reference_as_subspaces() {
    let m = tiny();
    let covs = our_covariances();
    let r = reference();
    let rank = r["meta"]["r"].as_u64().unwrap() as usize;
    let (mut worst_sine, mut worst_factor) = (0f64, 0f64);
    for (tag, scale) in [("s1", 1.0), ("s2", 2.0)] {
        let inits = &r["inits"][format!("lora_null@{tag}")];
        for layer in 0..2 {
            for t in Target::DEFAULT {
                let key = module_key(layer, t);
                let want = &inits[&key];
                let site_key = format!("{layer}.{}", site_name(t.site()));
                let c = &covs.sites[&(layer, t.site())].covariance;
                let e = eigh(c).unwrap();
                let p = null_basis(&e, rank);
                let p_ref = matrix(&want["P"]);
                // Davis–Kahan: the null subspace moves by at most ‖ΔC‖₂ / gap, where the gap
                // separates its eigenvalues from the rest (measured on the reference spectrum).
                let values: Vec<f64> = r["eigenvalues"][&site_key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                let n = values.len();
                let gap = values[n - rank - 1] - values[n - rank];
                let delta = covariance_distance(c, &site_key);
                let bound = delta / (gap - delta).max(f64::MIN_POSITIVE) + n as f64 * STORED_REL + EIGEN_ROUNDING;
                let sine = max_principal_sine(&p, &p_ref);
                worst_sine = worst_sine.max(sine);
                assert!(
                    sine <= bound,
                    "{key}: null spaces differ by sin θ = {sine:e}, beyond ‖ΔC‖/gap = {bound:e}"
                );
                // The factors, up to the sign of each component: W·P·Pᵀ depends only on the
                // subspace, so they move by at most ‖W‖·sin θ on top of the decompositions' rounding.
                let w =
                    pollster::block_on(read_matrix(m.model.linear(layer, t).unwrap().base.weight_out_in())).unwrap();
                let f = factors(run(factors_job(InitMethod::Null, w.clone(), rank, scale, Some((c, &e)), 0)).unwrap());
                let (a_ref, b_ref) = (matrix(&want["lora_A"]), matrix(&want["lora_B"]));
                let largest = a_ref.max_abs().max(b_ref.max_abs());
                let tol = FACTOR_REL_TOL * largest + spectral_norm(&w) * sine;
                let d = sign_aligned_diff(&f.a, &f.b, &a_ref, &b_ref);
                worst_factor = worst_factor.max(d / largest);
                assert!(
                    d < tol,
                    "lora_null@{tag} {key}: factors differ by {d} (tolerance {tol})"
                );
                // s·B·A = W·P·Pᵀ: the product is sign-free and compared as a whole.
                let product = f.b.matmul(&f.a).scale(scale);
                let product_ref = b_ref.matmul(&a_ref).scale(scale);
                let rel = product.sub(&product_ref).max_abs() / product_ref.max_abs();
                assert!(
                    rel < FACTOR_REL_TOL + spectral_norm(&w) * sine / product_ref.max_abs(),
                    "lora_null@{tag} {key}: s·B·A differs by {rel} relative"
                );
                let fro = f.residual.expect("null changes the base").frobenius_sq().sqrt();
                let fro_ref = want["residual_fro"].as_f64().unwrap();
                assert!(
                    (fro - fro_ref).abs() < RESIDUAL_NORM_REL_TOL * fro_ref,
                    "{key}: residual norm"
                );
            }
        }
    }
    eprintln!(
        "LoRA-Null against the reference: sin θ ≤ {worst_sine:.1e}, factors {worst_factor:.1e} of the largest entry"
    );
}

fn module_key(layer: usize, t: Target) -> String {
    format!("model.layers.{layer}.{}", t.path())
}

/// Max |ours − ref| over components, flipping each rank component's sign to match the
/// reference (SVD and QR determine each (uᵢ, vᵢ) pair only up to a joint sign).
fn sign_aligned_diff(a: &Matrix, b: &Matrix, a_ref: &Matrix, b_ref: &Matrix) -> f64 {
    let mut worst: f64 = 0.0;
    for j in 0..a.rows {
        let dot: f64 = (0..b.rows).map(|i| b[(i, j)] * b_ref[(i, j)]).sum::<f64>()
            + (0..a.cols).map(|k| a[(j, k)] * a_ref[(j, k)]).sum::<f64>();
        let s = if dot < 0.0 { -1.0 } else { 1.0 };
        for i in 0..b.rows {
            worst = worst.max((s * b[(i, j)] - b_ref[(i, j)]).abs());
        }
        for k in 0..a.cols {
            worst = worst.max((s * a[(j, k)] - a_ref[(j, k)]).abs());
        }
    }
    worst
}

#[test]
fn pissa_olora_corda_and_milora_factors_equal_peft_up_to_sign() {
    let m = tiny();
    let covs = our_covariances();
    let r = reference();
    let rank = r["meta"]["r"].as_u64().unwrap() as usize;
    for (name, method) in [
        ("pissa", InitMethod::Pissa),
        ("olora", InitMethod::Olora),
        ("corda_kpm", InitMethod::CordaKpm),
        ("corda_ipm", InitMethod::CordaIpm),
        ("milora", InitMethod::Milora),
    ] {
        for (tag, scale) in [("s1", 1.0), ("s2", 2.0)] {
            let inits = &r["inits"][format!("{name}@{tag}")];
            for layer in 0..2 {
                for t in Target::DEFAULT {
                    let key = module_key(layer, t);
                    let want = &inits[&key];
                    let w = pollster::block_on(read_matrix(m.model.linear(layer, t).unwrap().base.weight_out_in()))
                        .unwrap();
                    let c = &covs.sites[&(layer, t.site())].covariance;
                    let e = eigh(c).unwrap();
                    let job = factors_job(method, w.clone(), rank, scale, Some((c, &e)), 0);
                    let f = factors(run(job).unwrap());
                    let (a_ref, b_ref) = (matrix(&want["lora_A"]), matrix(&want["lora_B"]));
                    let tol = FACTOR_REL_TOL * a_ref.max_abs().max(b_ref.max_abs());
                    let d = sign_aligned_diff(&f.a, &f.b, &a_ref, &b_ref);
                    assert!(d < tol, "{name}@{tag} {key}: max difference {d} (tolerance {tol})");
                    let res = f.residual.expect("these methods change the base");
                    let fro = res.frobenius_sq().sqrt();
                    let fro_ref = want["residual_fro"].as_f64().unwrap();
                    assert!(
                        (fro - fro_ref).abs() < RESIDUAL_NORM_REL_TOL * fro_ref,
                        "{name}@{tag} {key}: residual norm {fro} vs {fro_ref}"
                    );
                    if let Some(full) = want.get("residual") {
                        assert!(
                            res.sub(&matrix(full)).max_abs() < RESIDUAL_ABS_TOL,
                            "{name}@{tag} {key}: residual"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_null_subspace_holds_as_little_held_out_energy_as_the_reference_s() {
    let r = reference();
    let rank = r["meta"]["r"].as_u64().unwrap() as usize;
    let inits = &r["inits"]["lora_null@s1"];
    for ((layer, site), stats) in &our_covariances().sites {
        let p = null_basis(&eigh(&stats.covariance).unwrap(), rank);
        let pt_p = p.t().matmul(&p);
        assert!(
            pt_p.sub(&Matrix::eye(rank)).max_abs() < ORTHONORMAL_TOL,
            "P is orthonormal"
        );
        let held = matrix(&r["heldout_covariances"][format!("{layer}.{}", site_name(*site))]);
        let ours = activation_energy(&held, &p);
        let t = Target::ALL.into_iter().find(|t| t.site() == *site).unwrap();
        let want = &inits[module_key(*layer, t)];
        let reference_energy = want["heldout_energy"].as_f64().unwrap();
        let top = want["heldout_energy_top"].as_f64().unwrap();
        assert!(
            (ours - reference_energy).abs() <= HELDOUT_ENERGY_REL_TOL * reference_energy,
            "layer {layer} {site:?}: held-out energy {ours} vs reference {reference_energy}"
        );
        assert!(
            ours < top,
            "layer {layer} {site:?}: null {ours} should be below top {top}"
        );
    }
}
