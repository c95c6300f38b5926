//! Property tests of the maths: decompositions reconstruct, bases are orthonormal, spectra are
//! sorted, and every initialisation leaves `residual + s·B·A = W`.

use proptest::prelude::*;

use super::decompose::{eigh, qr, svd};
use super::init::{self, Pick};
use super::spectra::{effective_rank, energy_count, summarize};
use super::{Matrix, Rng};

fn random(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut rng = Rng::new(seed);
    Matrix::from_fn(rows, cols, |_, _| rng.normal())
}

/// A covariance with a decaying spectrum, like real activations: XᵀX/T of correlated X.
fn covariance(n: usize, seed: u64) -> Matrix {
    let x = random(4 * n, n, seed);
    let decay = Matrix::from_fn(n, n, |i, j| if i == j { 0.8f64.powi(i as i32) } else { 0.0 });
    let xs = x.matmul(&decay);
    xs.t().matmul(&xs).scale(1.0 / (4 * n) as f64)
}

fn close(a: &Matrix, b: &Matrix, tol: f64) -> bool {
    a.sub(b).max_abs() <= tol * b.max_abs().max(1.0)
}

fn is_orthonormal_cols(q: &Matrix, tol: f64) -> bool {
    close(&q.t().matmul(q), &Matrix::eye(q.cols), tol)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn svd_reconstructs_with_orthonormal_factors_and_sorted_values(m in 2usize..24, n in 2usize..24, seed in 0u64..1000) {
        let w = random(m, n, seed);
        let d = svd(&w).unwrap();
        prop_assert!(d.s.windows(2).all(|p| p[0] >= p[1]) && d.s.iter().all(|&s| s >= 0.0));
        prop_assert!(is_orthonormal_cols(&d.u, 1e-10));
        prop_assert!(is_orthonormal_cols(&d.vt.t(), 1e-10));
        prop_assert!(close(&d.u.scale_cols(&d.s).matmul(&d.vt), &w, 1e-10));
    }

    #[test]
    fn eigh_reconstructs_a_covariance_with_descending_eigenvalues(n in 2usize..32, seed in 0u64..1000) {
        let c = covariance(n, seed);
        let e = eigh(&c).unwrap();
        prop_assert!(e.values.windows(2).all(|p| p[0] >= p[1]));
        prop_assert!(is_orthonormal_cols(&e.vectors, 1e-10));
        let rebuilt = e.vectors.scale_cols(&e.values).matmul(&e.vectors.t());
        prop_assert!(close(&rebuilt, &c, 1e-10));
    }

    #[test]
    fn qr_reconstructs(m in 2usize..24, n in 2usize..24, seed in 0u64..1000) {
        let w = random(m, n, seed);
        let (q, r) = qr(&w).unwrap();
        prop_assert!(is_orthonormal_cols(&q, 1e-10));
        prop_assert!(close(&q.matmul(&r), &w, 1e-10));
    }

    #[test]
    fn every_initialisation_keeps_residual_plus_scaled_update_equal_to_w(
        m in 4usize..20, n in 4usize..20, r in 1usize..4, scale in prop::sample::select(vec![0.5f64, 1.0, 2.0]), seed in 0u64..500
    ) {
        let w = random(m, n, seed);
        let c = covariance(n, seed + 1);
        let e = eigh(&c).unwrap();
        let p = init::null_basis(&e, r);
        let cases = [
            init::svd_init(&w, r, scale, Pick::Top).unwrap(),
            init::svd_init(&w, r, scale, Pick::Bottom).unwrap(),
            init::olora(&w, r, scale).unwrap(),
            init::corda(&w, &c, r, scale, Pick::Bottom).unwrap(),
            init::corda(&w, &c, r, scale, Pick::Top).unwrap(),
            init::null_space(&w, &p, scale).unwrap(),
        ];
        for f in cases {
            prop_assert_eq!((f.a.rows, f.a.cols, f.b.rows, f.b.cols), (r, n, m, r));
            let res = f.residual.unwrap();
            prop_assert!(close(&res.add(&f.b.matmul(&f.a).scale(scale)), &w, 1e-9));
        }
    }

    #[test]
    fn null_init_rows_lie_in_the_null_basis_and_its_residual_is_w_minus_wppt(
        m in 4usize..20, n in 6usize..20, r in 1usize..4, seed in 0u64..500
    ) {
        let w = random(m, n, seed);
        let e = eigh(&covariance(n, seed + 7)).unwrap();
        let p = init::null_basis(&e, r);
        prop_assert!(is_orthonormal_cols(&p, 1e-10));
        let f = init::null_space(&w, &p, 1.0).unwrap();
        // A (I − P Pᵀ) = 0: the down projection only reads the null directions.
        let outside = f.a.sub(&f.a.matmul(&p).matmul(&p.t()));
        prop_assert!(outside.max_abs() < 1e-9 * f.a.max_abs().max(1.0));
        prop_assert!(close(f.residual.as_ref().unwrap(), &w.sub(&w.matmul(&p).matmul(&p.t())), 1e-9));
        // The null directions carry the least energy of C.
        let z = init::null_zero(m, &p);
        prop_assert!(close(&z.a, &p.t(), 0.0) && z.b.max_abs() == 0.0 && z.residual.is_none());
    }
}

#[test]
fn kaiming_init_is_bounded_by_one_over_sqrt_fan_in_and_b_is_zero() {
    let f = init::lora_kaiming(8, 100, 4, &mut Rng::new(1));
    assert!(f.a.data.iter().all(|v| v.abs() <= 0.1));
    assert!(f.a.max_abs() > 0.05, "should fill the range");
    assert_eq!(f.b.max_abs(), 0.0);
    let g = init::lora_gaussian(8, 2000, 4, &mut Rng::new(2));
    let std = (g.a.frobenius_sq() / g.a.data.len() as f64).sqrt();
    assert!((std - 0.25).abs() < 0.01, "gaussian A has std 1/r, got {std}");
}

#[test]
fn effective_rank_and_energy_counts_follow_their_definitions() {
    assert!((effective_rank(&[1.0; 10]) - 10.0).abs() < 1e-12);
    assert!((effective_rank(&[5.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    let energies = [50.0, 30.0, 10.0, 9.0, 1.0];
    assert_eq!(energy_count(&energies, 0.90), 3);
    assert_eq!(energy_count(&energies, 0.99), 4);
    let s = summarize(&energies);
    assert!((s.stable_rank - 2.0).abs() < 1e-12);
}

/// An f64 inverse of a matrix with condition number ~1e3 is exact to ~1e-12; 1e-9 is far below
/// damped_inverse's own acceptance threshold (0.05), so the check can fail independently.
const DAMPED_INVERSE_TOL: f64 = 1e-9;

#[test]
fn corda_damping_finds_an_accurate_inverse_of_a_singular_covariance() {
    // Rank-deficient C (fewer samples than dimensions) still gets an inverse after damping.
    let x = random(3, 10, 5);
    let c = x.t().matmul(&x);
    let (cf, inv) = init::damped_inverse(&c).unwrap();
    // damped_inverse accepts an inverse once ‖C_f C_f⁻¹ − I‖ < 0.05; the true inverse of this
    // well-damped matrix is accurate to f64 rounding, so a much tighter bound can fail on its own.
    assert!(cf.matmul(&inv).sub(&Matrix::eye(10)).frobenius_sq().sqrt() < DAMPED_INVERSE_TOL);
    // The first damping (δ = 0.01 of the mean diagonal) already makes C positive definite.
    let damping = cf.sub(&c);
    let expected = 0.01 * c.trace() / 10.0;
    assert!(damping.sub(&Matrix::eye(10).scale(expected)).max_abs() < 1e-12 * c.max_abs());
}
