//! A partial symmetric eigensolver for the r smallest eigenpairs of a covariance (the LoRA-Null
//! null basis, `../shared/docs/algorithm.md` §1.3), without a full `d × d` decomposition.
//!
//! Method: shift-and-invert block (subspace) iteration with Rayleigh–Ritz. C is symmetric
//! positive semi-definite, so `C + δI` (δ a tiny multiple of ‖C‖_F) is positive definite and has
//! a Cholesky factor `L Lᵀ`, which costs d³/3 flops, against roughly 9d³ for the full `eigh` with
//! vectors. Each iteration applies `(C + δI)⁻¹` to a block of k = r + p vectors (two triangular
//! solves), orthonormalises it (QR), and extracts Ritz pairs from `Qᵀ C Q` (k × k). Eigenvector i
//! converges like `((λᵢ + δ) / (λ_{k+1} + δ))^iter`: the smallest eigenvalues of a covariance are
//! the *largest* of the inverse, so the tiny gaps at the bottom of the spectrum that slow a plain
//! subspace iteration on `λmax·I − C` are relative gaps here. The oversampling p widens them
//! further. Stopping rule: every wanted residual `‖C v − λ v‖ / ‖C‖_F ≤ tol` (‖C‖_F bounds ‖C‖₂
//! from above, so the test is conservative), or, for a matrix known only to a precision (an
//! f32-accumulated covariance), a residual below that precision that has stopped shrinking; or
//! the iteration cap, in which case the result says it did not converge and carries its
//! residual. The second rule matters when there are fewer calibration tokens than dimensions:
//! the bottom of the spectrum is then a cluster of rounding-level eigenvalues with relative gaps
//! of 1e-15, inside which no iteration separates the r smallest (nor needs to: any basis of the
//! cluster is exact for a matrix within C's own rounding), and the residual stalls at ~1e-9.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as triangular_matmul};
use faer::linalg::triangular_solve::{solve_lower_triangular_in_place, solve_upper_triangular_in_place};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Side};

use super::decompose::{self, DecomposeError, check_finite, from_faer, to_faer};
use super::{Matrix, Rng};

/// Options of [`smallest_eigenpairs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialOptions {
    /// Stop once every wanted residual `‖C v − λ v‖ / ‖C‖_F` is at most this. Covariances
    /// have their smallest eigenvalues at 1e-8..1e-10 of the largest, so the default (1e-12)
    /// is well below them; the rounding floor of the residual itself is ~1e-15.
    pub tol: f64,
    /// Relative precision of C's entries (0: exact). A wanted residual at most this, which
    /// has stopped shrinking since the previous check, also ends the iteration as converged:
    /// the pairs are then exact eigenpairs of a matrix within C's rounding (backward error), and
    /// further steps no longer pay. For covariances accumulated in f32, f32's unit roundoff
    /// ([`F32_PRECISION`]).
    pub precision: f64,
    /// Iteration cap; the result reports non-convergence rather than failing.
    pub max_iter: usize,
    /// Extra vectors carried in the block (k = r + oversample), which speeds convergence.
    pub oversample: usize,
    /// Seed of the Gaussian start block (the result depends only on C, r and the options).
    pub seed: u64,
    /// At or below this width the full `eigh` is used: it is cheaper than the iteration there
    /// (SmolLM2's 576-wide covariances: full 2x faster; at 1536 the iteration wins 1.4-2x).
    pub full_below: usize,
}

impl Default for PartialOptions {
    fn default() -> Self {
        Self {
            tol: 1e-12,
            precision: 0.0,
            max_iter: 300,
            oversample: 32,
            seed: 0x5EED,
            full_below: 1024,
        }
    }
}

/// The r smallest eigenpairs of a symmetric PSD matrix.
#[derive(Debug, Clone)]
pub struct PartialEigh {
    /// The r smallest eigenvalues, ascending.
    pub values: Vec<f64>,
    /// Their eigenvectors as orthonormal columns (`d × r`), in the same order.
    pub vectors: Matrix,
    /// Iterations run (0 when the full `eigh` was used).
    pub iterations: usize,
    /// Largest `‖C v − λ v‖ / ‖C‖_F` over the r pairs returned.
    pub max_residual: f64,
    /// Whether `max_residual ≤ tol`, or it stalled below `precision` (always true for the
    /// full-`eigh` fallback).
    pub converged: bool,
}

impl PartialEigh {
    /// The basis in the order [`super::init::null_basis`] gives it: the r smallest eigenvectors
    /// with the smallest eigenvalue last (the last r columns of the descending `eigh`).
    pub fn null_basis(&self) -> Matrix {
        let (d, r) = (self.vectors.rows, self.vectors.cols);
        Matrix::from_fn(d, r, |i, j| self.vectors[(i, r - 1 - j)])
    }
}

/// The unit roundoff of f32 (2⁻²⁴): [`PartialOptions::precision`] for covariances summed in f32.
pub const F32_PRECISION: f64 = f32::EPSILON as f64 / 2.0;

/// A residual that is more than this share of the previous check's has stalled. On SmolLM2's
/// MLP covariances (`lora-null bench eigen-model`): converging runs shrink it to 0.40–0.53 of
/// the previous check's (4096 tokens), runs on a rounding-level cluster to 0.72–1.05 (64 tokens).
const STALL: f64 = 0.8;

/// Relative shift `δ / ‖C‖_F` that makes `C + δI` safely positive definite: above the rounding
/// of a PSD matrix's smallest eigenvalue (~d·ε·‖C‖), far below the eigenvalues LoRA-Null ranks.
const SHIFT_REL: f64 = 1e-12;
/// If the Cholesky factorisation still fails, the shift grows by this factor, a few times.
const SHIFT_GROWTH: f64 = 100.0;
const SHIFT_TRIES: usize = 4;
/// Iterations between Rayleigh–Ritz steps: the residual test needs `C Q` (as costly as the
/// solve), while subspace iteration converges without rotating the block in between.
const CHECK_EVERY: usize = 3;

/// The r smallest eigenpairs of the symmetric PSD matrix `c` (`d × d`, lower triangle read as
/// in [`decompose::eigh`]), eigenvalues ascending. Falls back to the full `eigh` when
/// `d ≤ opts.full_below` or the block would hold more than half of the space.
///
/// Errors on NaN/∞, on an all-zero or non-square matrix, and if no shift makes `C + δI`
/// positive definite (C far from PSD). Non-convergence within `max_iter` is not an error:
/// check [`PartialEigh::converged`] and [`PartialEigh::max_residual`].
pub fn smallest_eigenpairs(c: &Matrix, r: usize, opts: &PartialOptions) -> Result<PartialEigh, DecomposeError> {
    let (norm, r, k) = check(c, r, opts)?;
    if c.rows <= opts.full_below || 2 * k > c.rows {
        return full_fallback(c, r, norm);
    }
    iterate(&mut c.data.clone(), c.rows, norm, r, k, opts)
}

/// [`smallest_eigenpairs`] taking the matrix, so that the solver works in its memory: the
/// Cholesky factor overwrites its lower triangle while C stays in the upper one, so one `d × d`
/// matrix is all it holds (at an 8192-wide covariance, 0.5 GB; a maths worker once held three).
pub fn smallest_eigenpairs_owned(
    mut c: Matrix,
    r: usize,
    opts: &PartialOptions,
) -> Result<PartialEigh, DecomposeError> {
    let (norm, r, k) = check(&c, r, opts)?;
    if c.rows <= opts.full_below || 2 * k > c.rows {
        return full_fallback(&c, r, norm);
    }
    iterate(&mut c.data, c.rows, norm, r, k, opts)
}

/// Checks the input; returns ‖C‖_F, r capped at d, and the block width k.
fn check(c: &Matrix, r: usize, opts: &PartialOptions) -> Result<(f64, usize, usize), DecomposeError> {
    check_finite(c, "the covariance")?;
    let d = c.rows;
    let norm = c.frobenius_sq().sqrt();
    if c.cols != d || norm == 0.0 {
        return Err(DecomposeError::Degenerate("the covariance"));
    }
    let r = r.min(d);
    Ok((norm, r, (r + opts.oversample).min(d)))
}

/// The iteration on the symmetric `d × d` matrix stored (row-major, lower triangle read) in
/// `buf`, which it overwrites ([`Factored`]).
fn iterate(
    buf: &mut [f64],
    d: usize,
    norm: f64,
    r: usize,
    k: usize,
    opts: &PartialOptions,
) -> Result<PartialEigh, DecomposeError> {
    // Column-major, the row-major lower triangle is the upper one.
    let f = Factored::new(MatMut::from_column_major_slice_mut(buf, d, d), norm)?;
    let mut rng = Rng::new(opts.seed);
    let mut q = orthonormal(Mat::from_fn(d, k, |_, _| rng.normal()).as_ref());
    let max_iter = opts.max_iter.max(1);
    let mut best = None;
    let mut previous = f64::INFINITY;
    for iter in 1..=max_iter {
        // W = (C + δI)⁻¹ Q, then Q = orth(W): one step of inverse subspace iteration.
        f.solve_in_place(q.as_mut());
        q = orthonormal(q.as_ref());
        // Rayleigh–Ritz and the residual test cost a product with C: only every few steps.
        if iter % CHECK_EVERY != 0 && iter != max_iter {
            continue;
        }
        let (values, v, residuals) = rayleigh_ritz(&f, q.as_ref(), r, norm);
        let max_residual = residuals.iter().fold(0.0f64, |m, &x| m.max(x));
        let stalled = max_residual <= opts.precision && max_residual > STALL * previous;
        let converged = max_residual <= opts.tol || stalled;
        previous = max_residual;
        q = v;
        best = Some((values, max_residual, converged, iter));
        if converged {
            break;
        }
    }
    let (values, max_residual, converged, iterations) = best.expect("invariant: at least one iteration runs");
    Ok(PartialEigh {
        values,
        vectors: from_faer(q.as_ref().subcols(0, r)),
        iterations,
        max_residual,
        converged,
    })
}

/// `C + δI = L Lᵀ` factored in C's own memory: L in the lower triangle (with the diagonal), C
/// kept in the strict upper triangle and `diag` for the products with C.
struct Factored<'a> {
    a: MatMut<'a, f64>,
    diag: Vec<f64>,
}

impl<'a> Factored<'a> {
    /// Factors the symmetric matrix whose upper triangle `a` holds (the lower one is
    /// overwritten), with δ = `SHIFT_REL`·‖C‖_F, grown until the factorisation succeeds.
    fn new(mut a: MatMut<'a, f64>, norm: f64) -> Result<Self, DecomposeError> {
        let d = a.nrows();
        let diag: Vec<f64> = (0..d).map(|i| a[(i, i)]).collect();
        let par = faer::get_global_parallelism();
        let mut shift = SHIFT_REL * norm;
        for _ in 0..SHIFT_TRIES {
            // The lower triangle from C (again, after a failed try): the upper one, shifted.
            for j in 0..d {
                a[(j, j)] = diag[j] + shift;
                for i in j + 1..d {
                    a[(i, j)] = a[(j, i)];
                }
            }
            if factor_lower(a.rb_mut(), par) {
                return Ok(Self { a, diag });
            }
            shift *= SHIFT_GROWTH;
        }
        Err(DecomposeError::NotPositiveDefinite(
            "the covariance plus a small shift (is it really PSD?)",
        ))
    }

    /// `Q ← (C + δI)⁻¹ Q`: two triangular solves with L.
    fn solve_in_place(&self, mut q: MatMut<'_, f64>) {
        let par = faer::get_global_parallelism();
        let l = self.a.rb();
        solve_lower_triangular_in_place(l, q.rb_mut(), par);
        solve_upper_triangular_in_place(l.transpose(), q, par);
    }

    /// `C Q`, from C's strict upper triangle (and its transpose) and the diagonal.
    fn times(&self, q: MatRef<'_, f64>) -> Mat<f64> {
        let par = faer::get_global_parallelism();
        let c = self.a.rb();
        let (d, k) = (q.nrows(), q.ncols());
        let mut out = Mat::from_fn(d, k, |i, j| self.diag[i] * q[(i, j)]);
        // faer sizes this product's parallelism by d²·columns in usize: on wasm32 that
        // overflows past d ≈ 9400 at 48 columns, so the columns go a few at a time there.
        let step = (usize::MAX / 4 / (d * d).max(1)).clamp(1, k.max(1));
        let mut j = 0;
        while j < k {
            let w = step.min(k - j);
            for (lhs, structure) in [
                (c, BlockStructure::StrictTriangularUpper),
                (c.transpose(), BlockStructure::StrictTriangularLower),
            ] {
                triangular_matmul(
                    out.as_mut().subcols_mut(j, w),
                    BlockStructure::Rectangular,
                    Accum::Add,
                    lhs,
                    structure,
                    q.subcols(j, w),
                    BlockStructure::Rectangular,
                    1.0,
                    par,
                );
            }
            j += w;
        }
        out
    }
}

/// The full `eigh`, cut to the r smallest pairs (ascending), with their residuals.
fn full_fallback(c: &Matrix, r: usize, norm: f64) -> Result<PartialEigh, DecomposeError> {
    let e = decompose::eigh(c)?;
    let d = c.rows;
    let values: Vec<f64> = (0..r).map(|j| e.values[d - 1 - j]).collect();
    let vectors = Matrix::from_fn(d, r, |i, j| e.vectors[(i, d - 1 - j)]);
    let vf = to_faer(&vectors);
    let residuals = column_residuals((to_faer(c) * &vf).as_ref(), vf.as_ref(), &values, norm);
    Ok(PartialEigh {
        values,
        vectors,
        iterations: 0,
        max_residual: residuals.iter().fold(0.0f64, |m, &x| m.max(x)),
        converged: true,
    })
}

/// Columns per step of [`factor_lower`].
const BLOCK: usize = 128;
/// Columns per product of [`factor_lower`]'s trailing update.
const STRIP: usize = 512;

/// Overwrites the lower triangle (with the diagonal) of the symmetric `a` with its Cholesky
/// factor, reading and writing nothing above the diagonal (faer's own in-place factorisation
/// uses part of the upper triangle as room); false if `a` is not positive definite. Blocked,
/// right-looking: each diagonal block factored (in a copy), the panel below it solved against
/// it, and the trailing lower triangle updated strip by strip of columns.
fn factor_lower(mut a: MatMut<'_, f64>, par: faer::Par) -> bool {
    let d = a.nrows();
    let mut k = 0;
    while k < d {
        let nb = BLOCK.min(d - k);
        let block = Mat::from_fn(nb, nb, |i, j| a[(k + i.max(j), k + i.min(j))]);
        let Ok(llt) = block.llt(Side::Lower) else {
            return false;
        };
        let l11 = llt.L();
        for j in 0..nb {
            for i in j..nb {
                a[(k + i, k + j)] = l11[(i, j)];
            }
        }
        let (_, _, below, trailing) = a.rb_mut().split_at_mut(k + nb, k + nb);
        let mut panel = below.subcols_mut(k, nb);
        // A₂₁ ← A₂₁ L₁₁⁻ᵀ, then A₂₂ ← A₂₂ − A₂₁ A₂₁ᵀ on its lower triangle.
        solve_lower_triangular_in_place(l11, panel.rb_mut().transpose_mut(), par);
        let panel = panel.rb();
        // In column strips: faer sizes a triangular product's parallelism by n²k in usize,
        // which overflows wasm32's past n ≈ 5800 at k = 128 (an 8192-wide covariance).
        let mut trailing = trailing;
        let n = trailing.nrows();
        let mut j = 0;
        while j < n {
            let w = STRIP.min(n - j);
            let (_, _, _, rest) = trailing.rb_mut().split_at_mut(j, j);
            let (diagonal, _, below, _) = rest.split_at_mut(w, w);
            let strip = panel.subrows(j, w);
            triangular_matmul(
                diagonal,
                BlockStructure::TriangularLower,
                Accum::Add,
                strip,
                BlockStructure::Rectangular,
                strip.transpose(),
                BlockStructure::Rectangular,
                -1.0,
                par,
            );
            faer::linalg::matmul::matmul(
                below,
                Accum::Add,
                panel.subrows(j + w, n - j - w),
                strip.transpose(),
                -1.0,
                par,
            );
            j += w;
        }
        k += nb;
    }
    true
}

/// Thin Householder QR's Q: orthonormal columns spanning those of `w`.
fn orthonormal(w: MatRef<'_, f64>) -> Mat<f64> {
    w.qr().compute_thin_Q()
}

/// Ritz pairs of C on span(Q) (Q: `d × k`, orthonormal), ascending: values of the first r,
/// all k Ritz vectors (the next block), and the first r residuals relative to `norm`.
fn rayleigh_ritz(c: &Factored<'_>, q: MatRef<'_, f64>, r: usize, norm: f64) -> (Vec<f64>, Mat<f64>, Vec<f64>) {
    let cq = c.times(q);
    let h = q.transpose() * &cq;
    let k = h.nrows();
    // Symmetrise away the rounding of Qᵀ (C Q) before the small dense eigh.
    let h = Mat::from_fn(k, k, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]));
    let (theta, y) = match h.self_adjoint_eigen(Side::Lower) {
        Ok(evd) => {
            let s = evd.S().column_vector();
            ((0..k).map(|i| s[i]).collect::<Vec<_>>(), evd.U().to_owned())
        }
        // The k × k Jacobi/QR eigh does not fail on finite input; keep Q if it ever does.
        Err(_) => ((0..k).map(|i| h[(i, i)]).collect(), Mat::identity(k, k)),
    };
    let v = q * &y;
    let cv = &cq * &y;
    let values: Vec<f64> = theta[..r].to_vec();
    let residuals = column_residuals(cv.as_ref(), v.as_ref(), &values, norm);
    (values, v, residuals)
}

/// `‖(C V)ⱼ − λⱼ vⱼ‖ / norm` for the first `values.len()` columns.
fn column_residuals(cv: MatRef<'_, f64>, v: MatRef<'_, f64>, values: &[f64], norm: f64) -> Vec<f64> {
    (0..values.len())
        .map(|j| {
            let s: f64 = (0..v.nrows())
                .map(|i| (cv[(i, j)] - values[j] * v[(i, j)]).powi(2))
                .sum();
            s.sqrt() / norm
        })
        .collect()
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "partial_tests.rs"]
mod tests;
