//! The heavy maths as self-contained jobs (plain data in, plain data out), so the caller decides
//! where they run: the engine runs them inline natively, or sends them to a Web Worker in the
//! browser (`engine::jobs` has the executor and the wire encoding).

use super::decompose::{self, DecomposeError, Eigh};
use super::init::{self, InitFactors, Pick};
use super::{Matrix, Rng};

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

/// Runs a job on the calling thread.
pub fn run(job: Job) -> Result<JobOutput, DecomposeError> {
    Ok(match job {
        Job::Eigh(c) => JobOutput::Eigh(decompose::eigh(&c)?),
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
