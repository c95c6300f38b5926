//! The LoRA initialisation maths (`../shared/docs/algorithm.md` §1.4 and §2): each function
//! returns the factors in PEFT's convention — down projection `a: [r, n]`, up projection
//! `b: [m, r]` — and, for the methods that move part of W into the adapter, the residual base
//! weight, so that `residual + s·b·a = W` (exactly, in f64) and the initial model computes the
//! base function. All maths in f64; callers store f32.

use super::decompose::{self, DecomposeError};
use super::{Matrix, Rng};

/// Factors of one adapted linear layer.
#[derive(Debug, Clone)]
pub struct InitFactors {
    /// Down projection A (PEFT `lora_A`), `r × n`.
    pub a: Matrix,
    /// Up projection B (PEFT `lora_B`), `m × r`.
    pub b: Matrix,
    /// `W − s·B·A` for methods that change the base; `None` leaves W as it is.
    pub residual: Option<Matrix>,
}

/// PEFT's default (`init_lora_weights=True`): A ~ U(−1/√n, 1/√n) (kaiming_uniform with a=√5,
/// fan_in = n), B = 0.
pub fn lora_kaiming(m: usize, n: usize, r: usize, rng: &mut Rng) -> InitFactors {
    let bound = 1.0 / (n as f64).sqrt();
    InitFactors {
        a: Matrix::from_fn(r, n, |_, _| (2.0 * rng.uniform() - 1.0) * bound),
        b: Matrix::zeros(m, r),
        residual: None,
    }
}

/// PEFT `"gaussian"`: A ~ N(0, (1/r)²), B = 0.
pub fn lora_gaussian(m: usize, n: usize, r: usize, rng: &mut Rng) -> InitFactors {
    let std = 1.0 / r as f64;
    InitFactors {
        a: Matrix::from_fn(r, n, |_, _| rng.normal() * std),
        b: Matrix::zeros(m, r),
        residual: None,
    }
}

/// Which r singular triplets to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The r largest (PiSSA, CorDA-IPM).
    Top,
    /// The r smallest (MiLoRA, CorDA-KPM).
    Bottom,
}

fn picked(k: usize, r: usize, pick: Pick) -> std::ops::Range<usize> {
    match pick {
        Pick::Top => 0..r,
        Pick::Bottom => k - r..k,
    }
}

/// Splits `U diag(S) Vᵀ` (chosen triplets) into A = diag(√(S/s))·Vᵀ and B = U·diag(√(S/s)),
/// with residual W − s·B·A (PEFT `pissa_init` / `corda_init`).
fn split_triplets(w: &Matrix, u: &Matrix, s: &[f64], vt: &Matrix, scale: f64) -> InitFactors {
    let root: Vec<f64> = s.iter().map(|v| (v / scale).max(0.0).sqrt()).collect();
    let a = vt.scale_rows(&root);
    let b = u.scale_cols(&root);
    let residual = w.sub(&b.matmul(&a).scale(scale));
    InitFactors {
        a,
        b,
        residual: Some(residual),
    }
}

/// PiSSA (top r) or MiLoRA (bottom r) from the SVD of W.
pub fn svd_init(w: &Matrix, r: usize, scale: f64, pick: Pick) -> Result<InitFactors, DecomposeError> {
    let d = decompose::svd(w)?;
    let range = picked(d.s.len(), r, pick);
    let u = d.u.cols_range(range.start, r);
    let vt = d.vt.rows_range(range.start, r);
    Ok(split_triplets(w, &u, &d.s[range], &vt, scale))
}

/// OLoRA: `W = QR`, B = Q[:, :r], A = R[:r, :] (no square roots, no 1/s), residual W − s·BA.
pub fn olora(w: &Matrix, r: usize, scale: f64) -> Result<InitFactors, DecomposeError> {
    let (q, rr) = decompose::qr(w)?;
    let b = q.cols_range(0, r);
    let a = rr.rows_range(0, r);
    let residual = w.sub(&b.matmul(&a).scale(scale));
    Ok(InitFactors {
        a,
        b,
        residual: Some(residual),
    })
}

/// CorDA's damping (PEFT `collect_eigens_for_layer`): C_f = C + δ·mean(diag C)·I with δ from
/// 0.01, doubling until ‖C_f C_f⁻¹ − I‖_F < 0.05. Returns (C_f, C_f⁻¹).
pub fn damped_inverse(c: &Matrix) -> Result<(Matrix, Matrix), DecomposeError> {
    let n = c.rows;
    let mean_diag = c.trace() / n as f64;
    let mut damp = 0.01;
    for _ in 0..60 {
        let mut cf = c.clone();
        for i in 0..n {
            cf[(i, i)] += mean_diag * damp;
        }
        if let Ok(inv) = decompose::spd_inverse(&cf) {
            let err = cf.matmul(&inv).sub(&Matrix::eye(n)).frobenius_sq().sqrt();
            if err < 0.05 {
                return Ok((cf, inv));
            }
        }
        damp *= 2.0;
    }
    Err(DecomposeError::NotPositiveDefinite("the covariance"))
}

/// CorDA: SVD(W·C_f) = U S V_hᵀ, Ṽ = (V_hᵀ C_f⁻¹)ᵀ so that U S Ṽᵀ = W; keep the last r
/// triplets (KPM, knowledge-preserving) or the first r (IPM, instruction-previewed), then split
/// as PiSSA does.
pub fn corda(w: &Matrix, c: &Matrix, r: usize, scale: f64, pick: Pick) -> Result<InitFactors, DecomposeError> {
    let (cf, inv) = damped_inverse(c)?;
    let d = decompose::svd(&w.matmul(&cf))?;
    let range = picked(d.s.len(), r, pick);
    let u = d.u.cols_range(range.start, r);
    let vt = d.vt.rows_range(range.start, r).matmul(&inv);
    Ok(split_triplets(w, &u, &d.s[range], &vt, scale))
}

/// LoRA-Null (v1 and v2 share it, §1.4): with P the `n × r` null basis (eigenvectors of the r
/// smallest eigenvalues of C), take the thin SVD of M = W P = Q Σ Zᵀ; then W P Pᵀ = Q Σ (P Z)ᵀ,
/// so B = Q·diag(√(Σ/s)), A = diag(√(Σ/s))·(P Z)ᵀ and the residual is W − W P Pᵀ. This avoids
/// an `m × n` SVD. The rows of A lie in span(P).
pub fn null_space(w: &Matrix, p: &Matrix, scale: f64) -> Result<InitFactors, DecomposeError> {
    let m = w.matmul(p);
    let d = decompose::svd(&m)?;
    // M is m × r with r ≤ m here, so the thin SVD has r triplets.
    let vt = d.vt.matmul(&p.t());
    Ok(split_triplets(w, &d.u, &d.s, &vt, scale))
}

/// LoRA-Null zero-B variant (§1.5, `--singular_aware_2`): A = Pᵀ, B = 0, W unchanged.
pub fn null_zero(m: usize, p: &Matrix) -> InitFactors {
    InitFactors {
        a: p.t(),
        b: Matrix::zeros(m, p.cols),
        residual: None,
    }
}

/// The `n × r` basis of the r smallest eigen-directions of C, from a descending eigh.
pub fn null_basis(eig: &decompose::Eigh, r: usize) -> Matrix {
    let n = eig.vectors.cols;
    eig.vectors.cols_range(n - r, r)
}

/// The `n × r` basis of the r largest eigen-directions of C.
pub fn top_basis(eig: &decompose::Eigh, r: usize) -> Matrix {
    eig.vectors.cols_range(0, r)
}
