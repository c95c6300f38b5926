//! The heavy maths as self-contained jobs, so the caller decides where they run: inline on the
//! calling thread (the CLI), or in a Web Worker (the browser, where a main-thread task must not
//! block the page for more than ~200 ms). Jobs and results have a compact binary encoding for
//! `postMessage`.

use std::future::Future;
use std::pin::Pin;

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

/// A boxed job future.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<JobOutput, DecomposeError>> + 'a>>;

/// Where jobs run.
pub trait Executor {
    /// Submits a job and resolves with its output.
    fn submit(&self, job: Job) -> JobFuture<'_>;
}

/// Runs every job immediately on the calling thread.
pub struct Inline;

impl Executor for Inline {
    fn submit(&self, job: Job) -> JobFuture<'_> {
        Box::pin(std::future::ready(run(job)))
    }
}

// ---- binary encoding (little-endian), for postMessage ------------------------------------

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}

fn put_matrix(out: &mut Vec<u8>, m: &Matrix) {
    put_u64(out, m.rows as u64);
    put_u64(out, m.cols as u64);
    for v in &m.data {
        out.extend(v.to_le_bytes());
    }
}

fn put_vec(out: &mut Vec<u8>, v: &[f64]) {
    put_u64(out, v.len() as u64);
    for x in v {
        out.extend(x.to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_le_bytes(head.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / 8 + 1).then_some(n)
    }
    fn vec(&mut self) -> Option<Vec<f64>> {
        let n = self.len()?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn matrix(&mut self) -> Option<Matrix> {
        let rows = self.len()?;
        let cols = self.len()?;
        let n = rows.checked_mul(cols)?;
        if n > self.0.len() / 8 {
            return None;
        }
        Matrix::from_vec(rows, cols, (0..n).map(|_| self.f64()).collect::<Option<_>>()?)
    }
}

fn formula_code(f: Formula) -> u64 {
    match f {
        Formula::Kaiming => 0,
        Formula::Gaussian => 1,
        Formula::Svd(Pick::Top) => 2,
        Formula::Svd(Pick::Bottom) => 3,
        Formula::Olora => 4,
        Formula::Corda(Pick::Top) => 5,
        Formula::Corda(Pick::Bottom) => 6,
        Formula::Null => 7,
        Formula::NullZero => 8,
    }
}

fn formula_from(code: u64) -> Option<Formula> {
    Some(match code {
        0 => Formula::Kaiming,
        1 => Formula::Gaussian,
        2 => Formula::Svd(Pick::Top),
        3 => Formula::Svd(Pick::Bottom),
        4 => Formula::Olora,
        5 => Formula::Corda(Pick::Top),
        6 => Formula::Corda(Pick::Bottom),
        7 => Formula::Null,
        8 => Formula::NullZero,
        _ => return None,
    })
}

impl Job {
    /// Encodes the job for transfer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Job::Eigh(c) => {
                put_u64(&mut out, 0);
                put_matrix(&mut out, c);
            }
            Job::SingularValues(w) => {
                put_u64(&mut out, 1);
                put_matrix(&mut out, w);
            }
            Job::Factors {
                formula,
                w,
                aux,
                rank,
                scale,
                seed,
            } => {
                put_u64(&mut out, 2);
                put_u64(&mut out, formula_code(*formula));
                put_matrix(&mut out, w);
                put_matrix(&mut out, aux);
                put_u64(&mut out, *rank as u64);
                out.extend(scale.to_le_bytes());
                put_u64(&mut out, *seed);
            }
        }
        out
    }

    /// Decodes bytes from [`Job::encode`]; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Job> {
        let mut c = Cursor(bytes);
        Some(match c.u64()? {
            0 => Job::Eigh(c.matrix()?),
            1 => Job::SingularValues(c.matrix()?),
            2 => Job::Factors {
                formula: formula_from(c.u64()?)?,
                w: c.matrix()?,
                aux: c.matrix()?,
                rank: usize::try_from(c.u64()?).ok()?,
                scale: c.f64()?,
                seed: c.u64()?,
            },
            _ => return None,
        })
    }
}

impl JobOutput {
    /// Encodes the output for transfer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            JobOutput::Eigh(e) => {
                put_u64(&mut out, 0);
                put_vec(&mut out, &e.values);
                put_matrix(&mut out, &e.vectors);
            }
            JobOutput::Values(v) => {
                put_u64(&mut out, 1);
                put_vec(&mut out, v);
            }
            JobOutput::Factors(f) => {
                put_u64(&mut out, 2);
                put_matrix(&mut out, &f.a);
                put_matrix(&mut out, &f.b);
                match &f.residual {
                    Some(r) => {
                        put_u64(&mut out, 1);
                        put_matrix(&mut out, r);
                    }
                    None => put_u64(&mut out, 0),
                }
            }
        }
        out
    }

    /// Decodes bytes from [`JobOutput::encode`]; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<JobOutput> {
        let mut c = Cursor(bytes);
        Some(match c.u64()? {
            0 => JobOutput::Eigh(Eigh {
                values: c.vec()?,
                vectors: c.matrix()?,
            }),
            1 => JobOutput::Values(c.vec()?),
            2 => JobOutput::Factors(InitFactors {
                a: c.matrix()?,
                b: c.matrix()?,
                residual: match c.u64()? {
                    1 => Some(c.matrix()?),
                    _ => None,
                },
            }),
            _ => return None,
        })
    }
}

/// Unwraps an [`JobOutput::Eigh`].
pub fn expect_eigh(out: JobOutput) -> Result<Eigh, DecomposeError> {
    match out {
        JobOutput::Eigh(e) => Ok(e),
        _ => Err(DecomposeError::Worker("a reply of the wrong kind".into())),
    }
}

/// Unwraps an [`JobOutput::Values`].
pub fn expect_values(out: JobOutput) -> Result<Vec<f64>, DecomposeError> {
    match out {
        JobOutput::Values(v) => Ok(v),
        _ => Err(DecomposeError::Worker("a reply of the wrong kind".into())),
    }
}

/// Unwraps an [`JobOutput::Factors`].
pub fn expect_factors(out: JobOutput) -> Result<InitFactors, DecomposeError> {
    match out {
        JobOutput::Factors(f) => Ok(f),
        _ => Err(DecomposeError::Worker("a reply of the wrong kind".into())),
    }
}
