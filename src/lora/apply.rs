//! Attaching initialised adapters to a model: one match over [`InitMethod`], each arm calling a
//! pure function of `linalg::init`; the residual base weight is written here, explicitly, and the
//! initial factors are kept in f32 for the PEFT export conversion.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::LoraAdapter;
use super::method::InitMethod;
use crate::calib::{CalibError, Covariances, EighCache};
use crate::linalg::decompose::{DecomposeError, Eigh};
use crate::linalg::init::{self, Pick};
use crate::linalg::jobs::{Executor, Formula, Job, expect_factors};
use crate::linalg::{Matrix, Rng};
use crate::model::weights::read_matrix;
use crate::model::{HostTensor, LlamaForCausalLM, Site, Target};

/// Adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Initialisation.
    pub method: InitMethod,
    /// Rank r.
    pub rank: usize,
    /// Alpha; the scale is `alpha / r` (or `alpha / √r` with rsLoRA).
    pub alpha: f64,
    /// rsLoRA scaling.
    pub use_rslora: bool,
    /// Adapted modules.
    pub targets: Vec<Target>,
    /// Seed for the random initialisations.
    pub seed: u64,
}

impl LoraConfig {
    /// The adapter scale s.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// Errors initialising adapters.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The method needs calibration statistics.
    #[error("method `{0}` needs activation statistics: pass --calib FILE (calibration text)")]
    NeedsCalibration(&'static str),
    /// The rank is too large or zero.
    #[error("rank {rank} is invalid for {module} ({m}×{n}); use 1..={max}")]
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
    /// A statistic for a site is missing.
    #[error("no activation statistics for layer {0} {1:?}; run calibration with this target")]
    MissingStats(usize, Site),
    /// A decomposition failed.
    #[error("layer {layer} {module}: {source}")]
    Decompose {
        /// Layer.
        layer: usize,
        /// Module.
        module: &'static str,
        /// Cause.
        source: DecomposeError,
    },
    /// Reading weights from the device failed.
    #[error("reading weights from the device failed: {0}")]
    Device(String),
    /// A covariance could not be decomposed.
    #[error(transparent)]
    Calib(#[from] CalibError),
}

/// The untrained factors of every adapted module, in f32 (what the export's rank-2r conversion
/// subtracts), keyed by (layer, target).
#[derive(Debug, Clone, Default)]
pub struct InitRecord {
    /// `(A₀ [r, n], B₀ [m, r])`.
    pub factors: BTreeMap<(usize, Target), (HostTensor, HostTensor)>,
}

fn upload(m: &Matrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(m.to_f32(), [m.rows, m.cols]), device)
}

/// The job that computes one module's factors: the one match over the methods, each arm naming
/// a pure function of `linalg::init` (through [`Formula`]) and the statistic it needs.
pub fn factors_job(
    method: InitMethod,
    w: Matrix,
    rank: usize,
    scale: f64,
    stats: Option<(&Matrix, &Eigh)>,
    seed: u64,
) -> Job {
    let none = || Matrix::zeros(0, 0);
    let cov = || stats.expect("invariant: checked needs_calibration before").0.clone();
    let null = || init::null_basis(stats.expect("invariant: checked needs_calibration before").1, rank);
    let (formula, aux) = match method {
        InitMethod::Lora => (Formula::Kaiming, none()),
        InitMethod::Gaussian => (Formula::Gaussian, none()),
        InitMethod::Pissa => (Formula::Svd(Pick::Top), none()),
        InitMethod::Milora => (Formula::Svd(Pick::Bottom), none()),
        InitMethod::Olora => (Formula::Olora, none()),
        InitMethod::CordaKpm => (Formula::Corda(Pick::Bottom), cov()),
        InitMethod::CordaIpm => (Formula::Corda(Pick::Top), cov()),
        InitMethod::Null | InitMethod::NullV2 => (Formula::Null, null()),
        InitMethod::NullZero => (Formula::NullZero, null()),
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

/// Initialises adapters on every target of every layer. For methods that change the base, the
/// module's weight is replaced by the residual here (and only here). `progress(done, total)`
/// is called after each module.
pub async fn initialize(
    model: &mut LlamaForCausalLM,
    config: &LoraConfig,
    covs: Option<&Covariances>,
    eighs: &mut EighCache,
    exec: &dyn Executor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InitRecord, InitError> {
    if config.method.needs_calibration() && covs.is_none() {
        return Err(InitError::NeedsCalibration(config.method.name()));
    }
    let device = model.device();
    let scale = config.scale();
    let mut rng = Rng::new(config.seed);
    let layers = model.model.layers.len();
    let total = layers * config.targets.len();
    let mut record = InitRecord::default();
    for layer in 0..layers {
        for (k, &target) in config.targets.iter().enumerate() {
            let w = read_matrix(model.linear(layer, target).weight_out_in())
                .await
                .map_err(InitError::Device)?;
            let max = w.rows.min(w.cols);
            if config.rank == 0 || config.rank > max {
                return Err(InitError::Rank {
                    rank: config.rank,
                    module: format!("layer {layer} {}", target.path()),
                    m: w.rows,
                    n: w.cols,
                    max,
                });
            }
            let stats = match covs {
                Some(c) if config.method.needs_calibration() => {
                    let cov = &c
                        .sites
                        .get(&(layer, target.site()))
                        .ok_or(InitError::MissingStats(layer, target.site()))?
                        .covariance;
                    Some((
                        cov,
                        eighs
                            .get(c, layer, target.site(), exec)
                            .await
                            .map_err(InitError::from)?,
                    ))
                }
                _ => None,
            };
            let job = factors_job(config.method, w, config.rank, scale, stats, rng.next_u64());
            let f = exec
                .submit(job)
                .await
                .and_then(expect_factors)
                .map_err(|source| InitError::Decompose {
                    layer,
                    module: target.module_name(),
                    source,
                })?;
            let linear = model.linear_mut(layer, target);
            if let Some(res) = &f.residual {
                linear.set_weight(res, &device);
            }
            linear.lora = Some(LoraAdapter::new(
                upload(&f.a, &device),
                upload(&f.b, &device),
                scale,
                config.method.trains_down(),
                true,
            ));
            record.factors.insert(
                (layer, target),
                (
                    HostTensor::new(f.a.to_f32(), vec![f.a.rows, f.a.cols]),
                    HostTensor::new(f.b.to_f32(), vec![f.b.rows, f.b.cols]),
                ),
            );
            progress(layer * config.targets.len() + k + 1, total);
        }
    }
    Ok(record)
}

/// For each adapted module, `trace(QᵀCQ)/trace(C)` with Q an orthonormal basis of the rows of
/// its initial down projection A₀: the share of the calibration activations' energy the adapter
/// reads at initialisation (tiny for the null-space methods, large for PiSSA).
pub fn adapter_input_energy(init: &InitRecord, covs: &Covariances) -> BTreeMap<(usize, Target), f64> {
    let mut out = BTreeMap::new();
    for (&(layer, target), (a, _)) in &init.factors {
        let Some(stats) = covs.sites.get(&(layer, target.site())) else {
            continue;
        };
        let Some(a) = Matrix::from_f32(a.shape[0], a.shape[1], &a.data) else {
            continue;
        };
        if let Ok((q, _)) = crate::linalg::decompose::qr(&a.t()) {
            out.insert(
                (layer, target),
                crate::linalg::spectra::activation_energy(&stats.covariance, &q),
            );
        }
    }
    out
}
