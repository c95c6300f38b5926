//! Initialising adapters: the settings ([`LoraConfig`]), the job that computes one module's
//! factors (its method's formula from the table, with the statistic it reads), and attaching the
//! result, where the residual base weight is written explicitly. The engine runs the jobs (inline
//! or in the maths worker) and drives the loop over modules.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::linear::{LoraAdapter, LoraLinear};
use super::method::InitMethod;
use crate::hint::{Hint, Input, Setting};
use crate::io::HostTensor;
use crate::linalg::Matrix;
use crate::linalg::decompose::Eigh;
use crate::linalg::init::{InitFactors, null_basis};
use crate::linalg::jobs::{Job, Statistic};
use crate::model::Target;

/// Adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Initialisation.
    pub method: InitMethod,
    /// Rank r (default 16).
    pub rank: usize,
    /// Alpha (default r: scale 1, as in the LoRA-Null and PiSSA papers); the scale is
    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub alpha: f64,
    /// rsLoRA scaling (default off).
    pub use_rslora: bool,
    /// Adapted modules (default all seven).
    pub targets: Vec<Target>,
    /// Seed of the random initialisations (default 42).
    pub seed: u64,
}

impl LoraConfig {
    /// The defaults for `method` at rank `rank` (alpha = r, all targets, seed 42).
    pub fn new(method: InitMethod, rank: usize) -> Self {
        Self {
            method,
            rank,
            alpha: rank as f64,
            use_rslora: false,
            targets: Target::DEFAULT.to_vec(),
            seed: 42,
        }
    }

    /// The adapter scale s.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks what can be checked before any work: a statistic-based method needs calibration.
    pub fn check(&self, has_calibration: bool) -> Result<(), InitError> {
        if self.method.needs_calibration() && !has_calibration {
            return Err(InitError::NeedsCalibration(self.method.name()));
        }
        if self.rank == 0 {
            return Err(InitError::ZeroRank);
        }
        if self.targets.is_empty() {
            return Err(InitError::NoTargets);
        }
        Ok(())
    }
}

/// Errors initialising adapters.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The method needs calibration statistics.
    #[error("method `{0}` initialises from activation statistics: collect them from calibration text first")]
    NeedsCalibration(&'static str),
    /// Rank 0.
    #[error("the rank must be at least 1")]
    ZeroRank,
    /// No module to adapt.
    #[error("no modules to adapt")]
    NoTargets,
    /// The rank is too large for a module.
    #[error("rank {rank} is too large for {module} ({m}×{n}); use 1..={max}")]
    Rank {
        /// Requested rank.
        rank: usize,
        /// Module.
        module: String,
        /// Rows.
        m: usize,
        /// Columns.
        n: usize,
        /// Largest valid rank.
        max: usize,
    },
    /// The model already carries adapters.
    #[error("the model already has adapters; reload the base model to initialise again")]
    AlreadyAdapted,
}

impl InitError {
    /// What the user can do about it.
    pub fn hints(&self) -> Vec<Hint> {
        match self {
            InitError::NeedsCalibration(_) => vec![Hint::Provide(Input::Calibration)],
            InitError::ZeroRank | InitError::Rank { .. } => vec![Hint::Fix(Setting::Rank)],
            InitError::NoTargets => vec![Hint::Fix(Setting::Targets)],
            InitError::AlreadyAdapted => Vec::new(),
        }
    }
}

/// The untrained factors of every adapted module, in f32 (what the export's rank-2r conversion
/// subtracts), keyed by (layer, target).
#[derive(Debug, Clone, Default)]
pub struct InitRecord {
    /// `(A₀ [r, n], B₀ [m, r])`.
    pub factors: BTreeMap<(usize, Target), (HostTensor, HostTensor)>,
}

/// Checks `rank` against a module of `m × n`.
pub fn check_rank(rank: usize, layer: usize, target: Target, m: usize, n: usize) -> Result<(), InitError> {
    let max = m.min(n);
    if rank == 0 || rank > max {
        return Err(InitError::Rank {
            rank,
            module: format!("layer {layer} {}", target.path()),
            m,
            n,
            max,
        });
    }
    Ok(())
}

/// The job that computes one module's factors: its method's formula (from the table), fed the
/// statistic that formula reads. `stats` is the input covariance and its eigendecomposition,
/// required when the method needs calibration.
pub fn factors_job(
    method: InitMethod,
    w: Matrix,
    rank: usize,
    scale: f64,
    stats: Option<(&Matrix, &Eigh)>,
    seed: u64,
) -> Job {
    let formula = method.spec().formula;
    let aux = match (formula.statistic(), stats) {
        (Statistic::None, _) | (_, None) => Matrix::zeros(0, 0),
        (Statistic::Covariance, Some((c, _))) => c.clone(),
        (Statistic::NullBasis, Some((_, e))) => null_basis(e, rank),
    };
    Job::Factors {
        formula,
        w,
        aux,
        rank,
        scale,
        seed,
    }
}

fn upload(m: &Matrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(m.to_f32(), [m.rows, m.cols]), device)
}

/// Puts computed factors on a layer: replaces its base weight by the residual when the method
/// changes the base (here, and only here), attaches the adapter (A trainable unless the method
/// freezes it), and returns the initial factors in f32 for the record.
pub fn attach_factors(
    layer: &mut LoraLinear,
    f: &InitFactors,
    scale: f64,
    method: InitMethod,
    device: &Device,
) -> (HostTensor, HostTensor) {
    if let Some(res) = &f.residual {
        if layer.base.is_packed() {
            // The residual is `W − s·B₀A₀`: a packed base keeps W and subtracts the product.
            layer
                .base
                .subtract_low_rank(upload(&f.a, device), upload(&f.b, device), scale);
        } else {
            layer.base.set_weight(res, device);
        }
    }
    layer.adapter = Some(LoraAdapter::new(
        upload(&f.a, device),
        upload(&f.b, device),
        scale,
        method.trains_down(),
        true,
    ));
    (
        HostTensor::new(f.a.to_f32(), vec![f.a.rows, f.a.cols]),
        HostTensor::new(f.b.to_f32(), vec![f.b.rows, f.b.cols]),
    )
}
