//! Decompositions through faer, in f64: symmetric eigendecomposition, thin SVD, thin QR, and
//! the SPD inverse CorDA needs. Results are sorted descending where that is meaningful.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef, Side};

use super::Matrix;

/// A decomposition failed to converge or the input was not finite.
#[derive(Debug, thiserror::Error)]
pub enum DecomposeError {
    /// NaN or infinity in the input.
    #[error("{0} contains NaN or infinite values; the statistics or weights are corrupt")]
    NotFinite(&'static str),
    /// faer reported non-convergence.
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
    /// The matrix is not positive definite where it must be.
    #[error("{0} is not positive definite even after damping")]
    NotPositiveDefinite(&'static str),
    /// The matrix is all zeros (or not square), so it has no meaningful eigenbasis.
    #[error("{0} is zero or not square; accumulate the statistics before decomposing them")]
    Degenerate(&'static str),
}

pub(super) fn to_faer(m: &Matrix) -> Mat<f64> {
    Mat::from_fn(m.rows, m.cols, |i, j| m[(i, j)])
}

pub(super) fn from_faer(m: MatRef<'_, f64>) -> Matrix {
    Matrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

pub(super) fn check_finite(m: &Matrix, what: &'static str) -> Result<(), DecomposeError> {
    if m.data.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(DecomposeError::NotFinite(what))
    }
}

/// `a · b`.
pub fn matmul(a: &Matrix, b: &Matrix) -> Matrix {
    let prod = to_faer(a) * to_faer(b);
    from_faer(prod.as_ref())
}

/// Eigendecomposition of a symmetric matrix.
#[derive(Debug, Clone)]
pub struct Eigh {
    /// Eigenvalues, descending.
    pub values: Vec<f64>,
    /// Eigenvectors as columns, in the same order (`n × n`, orthonormal).
    pub vectors: Matrix,
}

/// Symmetric eigendecomposition (lower triangle read), eigenvalues sorted descending.
pub fn eigh(c: &Matrix) -> Result<Eigh, DecomposeError> {
    check_finite(c, "the covariance")?;
    let evd = to_faer(c)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| DecomposeError::NoConvergence("the eigendecomposition"))?;
    let n = c.rows;
    let s = evd.S().column_vector();
    let u = evd.U();
    // faer returns ascending order: reverse.
    let values: Vec<f64> = (0..n).rev().map(|i| s[i]).collect();
    let vectors = Matrix::from_fn(n, n, |i, j| u[(i, n - 1 - j)]);
    Ok(Eigh { values, vectors })
}

/// Eigenvalues only, descending.
pub fn eigvalsh(c: &Matrix) -> Result<Vec<f64>, DecomposeError> {
    check_finite(c, "the covariance")?;
    let mut v = to_faer(c)
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| DecomposeError::NoConvergence("the eigendecomposition"))?;
    v.reverse();
    Ok(v)
}

/// Thin SVD `W = U diag(S) Vᵀ`, singular values descending.
#[derive(Debug, Clone)]
pub struct Svd {
    /// `m × k` left singular vectors.
    pub u: Matrix,
    /// `k` singular values, descending.
    pub s: Vec<f64>,
    /// `k × n` right singular vectors, transposed.
    pub vt: Matrix,
}

/// Thin SVD (k = min(m, n)).
pub fn svd(w: &Matrix) -> Result<Svd, DecomposeError> {
    check_finite(w, "the weight")?;
    let d = to_faer(w)
        .thin_svd()
        .map_err(|_| DecomposeError::NoConvergence("the SVD"))?;
    let s = d.S().column_vector();
    Ok(Svd {
        u: from_faer(d.U()),
        s: (0..s.nrows()).map(|i| s[i]).collect(),
        vt: from_faer(d.V().transpose()),
    })
}

/// Singular values only, descending.
pub fn singular_values(w: &Matrix) -> Result<Vec<f64>, DecomposeError> {
    check_finite(w, "the weight")?;
    to_faer(w)
        .singular_values()
        .map_err(|_| DecomposeError::NoConvergence("the SVD"))
}

/// Thin QR `W = Q R`: `Q` is `m × k` with orthonormal columns, `R` is `k × n` upper
/// triangular, k = min(m, n). Signs as Householder QR gives them (as torch.linalg.qr).
pub fn qr(w: &Matrix) -> Result<(Matrix, Matrix), DecomposeError> {
    check_finite(w, "the weight")?;
    let d = to_faer(w).qr();
    Ok((from_faer(d.compute_thin_Q().as_ref()), from_faer(d.thin_R())))
}

/// Inverse of a symmetric positive definite matrix through Cholesky.
pub fn spd_inverse(c: &Matrix) -> Result<Matrix, DecomposeError> {
    check_finite(c, "the damped covariance")?;
    let llt = to_faer(c)
        .llt(Side::Lower)
        .map_err(|_| DecomposeError::NotPositiveDefinite("the damped covariance"))?;
    Ok(from_faer(llt.inverse().as_ref()))
}
