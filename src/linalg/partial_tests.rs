//! The partial eigensolver against the full `eigh`: eigenvalues relative to the largest, and
//! the subspaces by their largest principal angle, on covariances with a known clustered
//! spectrum and on the tiny model's reference covariances.

use super::*;
use crate::linalg::decompose::{eigh, qr, singular_values};
use crate::linalg::init::null_basis;

/// Eigenvalue error relative to λmax: the iteration stops at residual 1e-12·‖C‖_F, and a
/// Ritz value's error is at most the residual (squared, over the gap) — 1e-9 leaves room.
const VALUE_REL_TOL: f64 = 1e-9;
/// sin θ_max between the partial and the full subspaces, when the gap λ_{r+1} − λ_r is at least
/// 1e-3·λmax: Davis–Kahan gives sin θ ≤ ‖R‖/gap ≈ 1e-12·‖C‖_F/1e-3·λmax ≤ ~1e-7 here, and
/// the full eigh's own error is ε·‖C‖/gap ≈ 1e-13.
const ANGLE_TOL: f64 = 1e-6;

/// Largest principal angle's sine between the column spans of two orthonormal `d × r` bases:
/// `‖(I − A Aᵀ) B‖₂` (accurate for tiny angles, unlike `√(1 − σ_min(AᵀB)²)`).
fn sin_theta_max(a: &Matrix, b: &Matrix) -> f64 {
    let outside = b.sub(&a.matmul(&a.t().matmul(b)));
    singular_values(&outside).unwrap()[0]
}

/// `Q diag(λ) Qᵀ` with a random orthogonal Q: a symmetric PSD matrix of known spectrum.
fn with_spectrum(lambda: &[f64], seed: u64) -> Matrix {
    let n = lambda.len();
    let mut rng = Rng::new(seed);
    let (q, _) = qr(&Matrix::from_fn(n, n, |_, _| rng.normal())).unwrap();
    let c = q.scale_cols(lambda).matmul(&q.t());
    // Exactly symmetric, as an accumulated covariance is.
    Matrix::from_fn(n, n, |i, j| 0.5 * (c[(i, j)] + c[(j, i)]))
}

/// Like an activation covariance: a few large directions, a long decaying tail, and r smallest
/// eigenvalues clustered near zero (within 5% of each other) below a gap.
fn clustered_spectrum(n: usize, r: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if i < r {
                1e-7 * (1.0 + 0.05 * i as f64 / r as f64)
            } else {
                1e-3 * (1e3f64).powf((i - r) as f64 / (n - r) as f64)
            }
        })
        .collect()
}

/// The r smallest pairs of the full eigh, ascending.
fn full_smallest(c: &Matrix, r: usize) -> (Vec<f64>, Matrix) {
    let e = eigh(c).unwrap();
    let d = c.rows;
    let values = (0..r).map(|j| e.values[d - 1 - j]).collect();
    (values, Matrix::from_fn(d, r, |i, j| e.vectors[(i, d - 1 - j)]))
}

/// Default options, but the iteration even at test sizes (below the full-eigh cut-over).
fn iterate() -> PartialOptions {
    PartialOptions {
        full_below: 0,
        ..PartialOptions::default()
    }
}

fn assert_matches_full(c: &Matrix, r: usize, opts: &PartialOptions, angle_tol: f64, what: &str) {
    let p = smallest_eigenpairs(c, r, opts).unwrap();
    let (values, vectors) = full_smallest(c, r);
    let lmax = eigh(c).unwrap().values[0];
    assert!(
        p.converged,
        "{what}: residual {:.2e} after {} iterations",
        p.max_residual, p.iterations
    );
    assert!(p.values.windows(2).all(|w| w[0] <= w[1]), "{what}: ascending");
    let value_err = p
        .values
        .iter()
        .zip(&values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / lmax;
    assert!(
        value_err <= VALUE_REL_TOL,
        "{what}: eigenvalues off by {value_err:.2e}·λmax"
    );
    let gram = p.vectors.t().matmul(&p.vectors).sub(&Matrix::eye(r)).max_abs();
    assert!(gram < 1e-12, "{what}: basis not orthonormal ({gram:.2e})");
    let angle = sin_theta_max(&vectors, &p.vectors);
    assert!(angle <= angle_tol, "{what}: sin θ_max = {angle:.2e}");
}

#[test]
fn partial_eigh_finds_a_clustered_smallest_subspace_of_a_known_spectrum() {
    let (n, r) = (400, 16);
    let lambda = clustered_spectrum(n, r);
    let c = with_spectrum(&lambda, 3);
    assert_matches_full(&c, r, &iterate(), ANGLE_TOL, "clustered 400");
    // The eigenvalues themselves, against the spectrum c was built from.
    let p = smallest_eigenpairs(&c, r, &iterate()).unwrap();
    for (got, want) in p.values.iter().zip(&lambda) {
        assert!((got - want).abs() <= VALUE_REL_TOL, "{got} vs {want}");
    }
}

#[test]
fn partial_eigh_handles_an_exactly_singular_covariance() {
    // Fewer samples than dimensions: 300 zero eigenvalues, any basis of them is right, so
    // only the residual and the eigenvalues (all ≈ 0) are checked.
    let (n, t, r) = (320, 20, 16);
    let mut rng = Rng::new(9);
    let x = Matrix::from_fn(t, n, |_, _| rng.normal());
    let c = x.t().matmul(&x).scale(1.0 / t as f64);
    let p = smallest_eigenpairs(&c, r, &iterate()).unwrap();
    assert!(p.iterations > 0);
    let lmax = eigh(&c).unwrap().values[0];
    assert!(
        p.converged && p.max_residual <= 1e-10,
        "residual {:.2e}",
        p.max_residual
    );
    assert!(p.values.iter().all(|v| v.abs() <= VALUE_REL_TOL * lmax));
    // They do lie in the null space of X.
    assert!(x.matmul(&p.vectors).max_abs() <= 1e-6 * x.max_abs());
}

/// `XᵀX / T` summed in f32 over the tokens, as the calibration accumulates it.
fn f32_covariance(x: &Matrix) -> Matrix {
    let (t, n) = (x.rows, x.cols);
    let mut sum = vec![0f32; n * n];
    for k in 0..t {
        for i in 0..n {
            let xi = x[(k, i)] as f32;
            for j in 0..=i {
                sum[i * n + j] += xi * x[(k, j)] as f32;
            }
        }
    }
    Matrix::from_fn(n, n, |i, j| sum[i.max(j) * n + i.min(j)] as f64 / t as f64)
}

#[test]
fn partial_eigh_stops_at_the_precision_of_an_f32_covariance_with_fewer_tokens_than_dimensions() {
    // 64 tokens of a 400-wide input, summed in f32: 336 eigenvalues at rounding level whose
    // relative gaps are ~1e-15, so no iteration ranks them, and any basis of them is right.
    let (n, t, r) = (400, 64, 16);
    let mut rng = Rng::new(21);
    let x = Matrix::from_fn(t, n, |_, j| rng.normal() / ((j + 1) as f64).sqrt());
    let c = f32_covariance(&x);
    let exact = PartialOptions {
        max_iter: 60,
        ..iterate()
    };
    let stuck = smallest_eigenpairs(&c, r, &exact).unwrap();
    let opts = PartialOptions {
        precision: F32_PRECISION,
        ..iterate()
    };
    let p = smallest_eigenpairs(&c, r, &opts).unwrap();
    let trace = c.trace();
    let energy = |v: &Matrix| v.t().matmul(&c.matmul(v)).trace() / trace;
    let (_, full) = full_smallest(&c, r);
    // Without the precision rule the residual stalls near 1e-9 and the iteration runs on.
    assert!(!stuck.converged && stuck.iterations == 60, "{stuck:?}");
    assert!(
        p.converged && p.iterations <= 12 && p.max_residual <= F32_PRECISION,
        "{} iterations, residual {:.2e}",
        p.iterations,
        p.max_residual
    );
    // The energy the basis reads is the full eigh's optimum to within f32's rounding of the
    // trace (both are rounding noise here), and the vectors lie in X's null space.
    let excess = energy(&p.vectors) - energy(&full);
    assert!(excess.abs() <= F32_PRECISION, "energy excess {excess:.2e}");
    assert!(x.matmul(&p.vectors).max_abs() <= 1e-6 * x.max_abs());
}

/// The factor overwrites C's lower triangle, C stays in the upper one: products with C and
/// solves with C + δI are exact, also after failed tries (a slightly indefinite C makes the
/// first shifts fail, and each retry rebuilds the lower triangle from the upper).
#[test]
fn the_factor_shares_the_covariances_memory_and_keeps_c_for_its_products() {
    // Wider than a block (128) plus a strip (512): every part of `factor_lower` runs.
    let n = 700;
    let mut spectrum = clustered_spectrum(n, 8);
    let scale = spectrum.iter().map(|l| l * l).sum::<f64>().sqrt();
    for (d_rel, grows) in [(0.0, false), (-1e-9, true)] {
        spectrum[0] = d_rel * scale;
        let c = with_spectrum(&spectrum, 3);
        let norm = c.frobenius_sq().sqrt();
        let mut buf = c.data.clone();
        let f = Factored::new(MatMut::from_column_major_slice_mut(&mut buf, n, n), norm).unwrap();
        // C's row-major lower triangle is the view's upper one, and is left as it was.
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(f.a[(i, j)], c[(j, i)], "({i}, {j})");
            }
        }
        let mut rng = Rng::new(4);
        let q = Mat::from_fn(n, 5, |_, _| rng.normal());
        let want = to_faer(&c) * &q;
        let got = f.times(q.as_ref());
        let err = (0..n)
            .flat_map(|i| (0..5).map(move |j| (i, j)))
            .fold(0f64, |m, (i, j)| m.max((got[(i, j)] - want[(i, j)]).abs()));
        assert!(err <= 1e-13 * norm, "C·Q off by {err:.2e}");
        // (C + δI) · solve(Q) = Q, with δ read off the factor's diagonal.
        let l = from_faer(f.a.rb());
        let shift = (0..n)
            .map(|i| (0..=i).map(|k| l[(i, k)] * l[(i, k)]).sum::<f64>() - c[(i, i)])
            .sum::<f64>()
            / n as f64;
        assert_eq!(shift > 1e-11 * norm, grows, "shift {:.2e}·‖C‖", shift / norm);
        let mut x = q.clone();
        f.solve_in_place(x.as_mut());
        let back = &(to_faer(&c) * &x) + &(&x * faer::Scale(shift));
        let err = (0..n)
            .flat_map(|i| (0..5).map(move |j| (i, j)))
            .fold(0f64, |m, (i, j)| m.max((back[(i, j)] - q[(i, j)]).abs()));
        let x_max = (0..n)
            .flat_map(|i| (0..5).map(move |j| (i, j)))
            .fold(0f64, |m, (i, j)| m.max(x[(i, j)].abs()));
        assert!(err <= 1e-12 * norm * x_max, "(C + δI)·solve(Q) off by {err:.2e}");
    }
}

#[test]
fn partial_eigh_matches_full_eigh_on_the_tiny_reference_covariances() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/init/reference.json");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/tiny/init/reference.json");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Force the iteration (these are 64 and 128 wide, below the full-eigh cut-over).
    let opts = PartialOptions {
        full_below: 0,
        oversample: 8,
        ..PartialOptions::default()
    };
    for (key, v) in json["covariances"].as_object().unwrap() {
        let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
        let c = Matrix::from_vec(rows.len(), rows.len(), rows.concat()).unwrap();
        let r = 16;
        let full = eigh(&c).unwrap().values;
        let d = c.rows;
        // Davis–Kahan: the angle is only determined up to (residual·‖C‖_F) / gap.
        let gap = (full[d - 1 - r] - full[d - r]) / full[0];
        let p = smallest_eigenpairs(&c, r, &opts).unwrap();
        let norm_ratio = c.frobenius_sq().sqrt() / full[0];
        let angle_tol = ANGLE_TOL.max(10.0 * p.max_residual * norm_ratio / gap);
        assert_matches_full(&c, r, &opts, angle_tol, key);
    }
}

#[test]
fn partial_eigh_is_deterministic_and_its_null_basis_matches_init() {
    let c = with_spectrum(&clustered_spectrum(300, 8), 11);
    let opts = iterate();
    let a = smallest_eigenpairs(&c, 8, &opts).unwrap();
    let b = smallest_eigenpairs(&c, 8, &opts).unwrap();
    assert_eq!(a.values, b.values);
    assert_eq!(a.vectors, b.vectors);
    // Same projector as the full path's null basis (columns may differ in sign).
    let full = null_basis(&eigh(&c).unwrap(), 8);
    let (pa, pf) = (a.null_basis(), full);
    let projector_gap = pa.matmul(&pa.t()).sub(&pf.matmul(&pf.t())).max_abs();
    assert!(projector_gap <= ANGLE_TOL, "projectors differ by {projector_gap:.2e}");
}

#[test]
fn partial_eigh_falls_back_refuses_bad_input_and_reports_non_convergence() {
    let c = with_spectrum(&clustered_spectrum(300, 8), 5);
    // r ≥ d and small d use the full eigh.
    let all = smallest_eigenpairs(&c, 1000, &PartialOptions::default()).unwrap();
    assert_eq!((all.vectors.cols, all.iterations), (300, 0));
    let small = smallest_eigenpairs(&c.rows_range(0, 40).cols_range(0, 40), 4, &PartialOptions::default()).unwrap();
    assert!(small.converged && small.iterations == 0);
    // NaN and zero are errors, not panics.
    let mut bad = c.clone();
    bad[(3, 4)] = f64::NAN;
    assert!(matches!(
        smallest_eigenpairs(&bad, 4, &PartialOptions::default()),
        Err(DecomposeError::NotFinite(_))
    ));
    assert!(matches!(
        smallest_eigenpairs(&Matrix::zeros(300, 300), 4, &PartialOptions::default()),
        Err(DecomposeError::Degenerate(_))
    ));
    // One iteration with tol 0: an answer, flagged, with its residual.
    let opts = PartialOptions {
        max_iter: 1,
        tol: 0.0,
        ..iterate()
    };
    let one = smallest_eigenpairs(&c, 8, &opts).unwrap();
    assert!(!one.converged && one.iterations == 1 && one.max_residual > 0.0);
    // r = 0 is an empty answer.
    assert_eq!(
        smallest_eigenpairs(&c, 0, &PartialOptions::default())
            .unwrap()
            .vectors
            .cols,
        0
    );
}
