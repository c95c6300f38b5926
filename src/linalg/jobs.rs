//! The heavy maths as self-contained jobs (plain data in, plain data out), so the caller decides
//! where they run: the engine runs them inline natively, or sends them to a Web Worker in the
//! browser (`engine::jobs` has the executor and the wire encoding).

use super::decompose::{self, DecomposeError, Eigh};
use super::init::{self, InitFactors, Pick};
use super::{Matrix, Rng, partial};

/// Which formula of `linalg::init` produces a module's factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formula {
    /// Kaiming-uniform A, B = 0.
    Kaiming,
    /// Gaussian A (std 1/r), B = 0.
    Gaussian,
    /// SVD of W, top (PiSSA) or bottom (MiLoRA) triplets.
    Svd(Pick),
    /// QR of W.
    Olora,
    /// SVD of W·C, bottom (KPM) or top (IPM) triplets.
    Corda(Pick),
    /// The activation null space: W P Pᵀ split into factors.
    Null,
    /// A = Pᵀ, B = 0.
    NullZero,
}

/// The activation statistic a formula reads (its `aux` input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// None: the formula reads only W.
    None,
    /// The covariance C itself (CorDA).
    Covariance,
    /// The `n × r` basis of C's r smallest eigenvectors (the null methods).
    NullBasis,
}

impl Formula {
    /// What the formula reads besides W.
    pub fn statistic(self) -> Statistic {
        match self {
            Formula::Kaiming | Formula::Gaussian | Formula::Svd(_) | Formula::Olora => Statistic::None,
            Formula::Corda(_) => Statistic::Covariance,
            Formula::Null | Formula::NullZero => Statistic::NullBasis,
        }
    }

    /// Whether it moves part of W into the adapter (returns a residual base weight).
    pub fn changes_base(self) -> bool {
        match self {
            Formula::Kaiming | Formula::Gaussian | Formula::NullZero => false,
            Formula::Svd(_) | Formula::Olora | Formula::Corda(_) | Formula::Null => true,
        }
    }
}

/// One unit of heavy work.
#[derive(Debug, Clone)]
pub enum Job {
    /// Eigendecomposition of a symmetric matrix.
    Eigh(Matrix),
    /// The `r` smallest eigenpairs of a covariance only (the null methods' statistic), by the
    /// partial eigensolver; returned as an [`Eigh`] of `r` pairs in descending order.
    SmallestEigh {
        /// The covariance.
        c: Matrix,
        /// Pairs wanted.
        r: usize,
    },
    /// Singular values of a matrix.
    SingularValues(Matrix),
    /// The factors of one module.
    Factors {
        /// Which formula.
        formula: Formula,
        /// The weight `m × n`.
        w: Matrix,
        /// The covariance (CorDA) or the `n × r` null basis (null methods); empty otherwise.
        aux: Matrix,
        /// Rank.
        rank: usize,
        /// Scale s.
        scale: f64,
        /// Seed of the random formulas.
        seed: u64,
    },
}

impl Job {
    /// Bytes of its matrices (what sending it copies).
    pub fn input_bytes(&self) -> usize {
        8 * match self {
            Job::Eigh(m) | Job::SingularValues(m) | Job::SmallestEigh { c: m, .. } => m.data.len(),
            Job::Factors { w, aux, .. } => w.data.len() + aux.data.len(),
        }
    }
}

/// What a job returns.
#[derive(Debug, Clone)]
pub enum JobOutput {
    /// From [`Job::Eigh`].
    Eigh(Eigh),
    /// From [`Job::SingularValues`].
    Values(Vec<f64>),
    /// From [`Job::Factors`].
    Factors(InitFactors),
}

/// The `r` smallest eigenpairs of `c` as a descending [`Eigh`] (what [`init::null_basis`] reads),
/// from the partial eigensolver, which takes `c` over to hold less. The covariances are sums in
/// f32 (`calib::covariance`), so the iteration also ends once its residual stalls below f32's
/// precision (with fewer calibration tokens than dimensions it stalls near 1e-9·‖C‖_F after a
/// few steps, and would otherwise run to the cap). Should the iteration reach its cap (300
/// steps) the pairs it has are used: the subspace is still the lowest-energy one found.
fn smallest(c: Matrix, r: usize) -> Result<Eigh, DecomposeError> {
    let opts = partial::PartialOptions {
        precision: partial::F32_PRECISION,
        ..partial::PartialOptions::default()
    };
    let p = partial::smallest_eigenpairs_owned(c, r, &opts)?;
    Ok(Eigh {
        values: p.values.iter().rev().copied().collect(),
        vectors: p.null_basis(),
    })
}

/// Runs a job on the calling thread.
pub fn run(job: Job) -> Result<JobOutput, DecomposeError> {
    Ok(match job {
        Job::Eigh(c) => JobOutput::Eigh(decompose::eigh(&c)?),
        Job::SmallestEigh { c, r } => JobOutput::Eigh(smallest(c, r)?),
        Job::SingularValues(w) => JobOutput::Values(decompose::singular_values(&w)?),
        Job::Factors {
            formula,
            w,
            aux,
            rank,
            scale,
            seed,
        } => {
            let mut rng = Rng::new(seed);
            JobOutput::Factors(match formula {
                Formula::Kaiming => init::lora_kaiming(w.rows, w.cols, rank, &mut rng),
                Formula::Gaussian => init::lora_gaussian(w.rows, w.cols, rank, &mut rng),
                Formula::Svd(pick) => init::svd_init(&w, rank, scale, pick)?,
                Formula::Olora => init::olora(&w, rank, scale)?,
                Formula::Corda(pick) => init::corda(&w, &aux, rank, scale, pick)?,
                Formula::Null => init::null_space(&w, &aux, scale)?,
                Formula::NullZero => init::null_zero(w.rows, &aux),
            })
        }
    })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// Past `PartialOptions::full_below` the iteration runs: its pairs, in the descending order
    /// `null_basis` reads, span the full eigh's null basis and carry its eigenvalues.
    #[test]
    fn smallest_eigh_gives_the_full_eighs_null_basis_in_its_order() {
        let (d, t, r) = (1100, 1400, 4);
        let mut rng = Rng::new(11);
        let x = Matrix::from_fn(t, d, |_, j| rng.normal() / ((j + 1) as f64).sqrt());
        let c = x.t().matmul(&x).scale(1.0 / t as f64);
        let part = smallest(c.clone(), r).unwrap();
        let full = decompose::eigh(&c).unwrap();
        let n = full.values.len();
        for (k, v) in part.values.iter().enumerate() {
            let want = full.values[n - r + k];
            assert!((v - want).abs() <= 1e-9 * full.values[0], "value {k}: {v} vs {want}");
        }
        let (p, q) = (init::null_basis(&part, r), init::null_basis(&full, r));
        // ‖P Pᵀ Q − Q‖: Q's part outside span(P).
        let outside = p.matmul(&p.t().matmul(&q)).sub(&q).frobenius_sq().sqrt();
        assert!(outside < 1e-6, "the bases differ by {outside}");
    }
}
