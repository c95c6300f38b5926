//! Calibration and initialisation block by block, for models whose covariances do not fit in
//! memory at once: a 1.24 B Llama's are 10 GB in f64 (each layer's 8192-wide MLP input alone is
//! 0.5 GB). The calibration windows go through the model one block at a time, every window's
//! hidden state kept between blocks; each block's covariances exist only until its adapters are
//! initialised (for the null methods, a layer's decompositions run in the maths workers while
//! the next blocks are calibrated: one layer per worker, within a byte budget). The factors are
//! those of [`LoadedModel::calibrate`] then
//! [`LoadedModel::init_adapters`]: the same windows meet the same unadapted blocks, and the
//! modules draw their seeds in the same order.

use std::collections::{BTreeMap, VecDeque};

use burn::tensor::{Int, Tensor, TensorData};

use super::jobs::{EighCache, Executor, SmallestJobs};
use super::{AdapterState, CalibOptions, EngineError, LoadedModel};
use crate::calib::{CalibError, CovarianceAccumulator, Normalization};
use crate::io::dataset::Record;
use crate::linalg::jobs::Statistic;
use crate::lora::metrics::input_energy;
use crate::lora::{InitError, InitRecord, LoraConfig};
use crate::model::arch::sites_of;
use crate::model::{Site, Target};

/// What a streamed calibration saw, and the share of its activations' energy each initial
/// down projection reads (as [`LoadedModel::adapter_input_energy`]).
#[derive(Debug, Clone)]
pub struct StreamedCalibration {
    /// Windows run.
    pub windows: usize,
    /// Tokens run.
    pub tokens: usize,
    /// The normalisation used.
    pub normalization: Normalization,
    /// Set when the corpus was shorter than asked.
    pub note: Option<String>,
    /// Per adapted module.
    pub input_energy: BTreeMap<(usize, Target), f64>,
}

/// Above this many bytes of f64 covariances, a caller should calibrate block by block.
pub const STREAM_ABOVE_BYTES: u64 = 1 << 30;

/// At most this many bytes of covariances in flight to the null-basis jobs of the layers after
/// the oldest one. A maths worker holds one copy of each covariance it works on (the partial
/// eigensolver factors it in its own memory), and the engine none once sent. Qwen2.5-0.5B's
/// layers hand over 208 MB each, Llama-3.2-1B's 638 MB (one 8192-wide): two at a time for both
/// on two workers.
const LAYERS_IN_FLIGHT_BYTES: usize = 640 << 20;

/// A calibrated layer whose adapters are not initialised yet.
struct PendingLayer<'a> {
    layer: usize,
    covs: crate::calib::Covariances,
    /// The null methods' smallest-eigenpair jobs, in flight.
    jobs: Option<SmallestJobs<'a>>,
    /// tr(C) per site of the jobs, in their order.
    traces: Vec<f64>,
}

impl LoadedModel {
    /// Bytes the covariances of `targets` take on the host in f64, all layers at once.
    pub fn covariance_bytes(&self, targets: &[Target]) -> u64 {
        let c = &self.config;
        let per_layer: u64 = sites_of(targets)
            .into_iter()
            .map(|site| {
                let d = match site {
                    Site::AttnInput | Site::MlpInput => c.hidden_size,
                    Site::AttnOutput => c.num_attention_heads * c.head_dim,
                    Site::MlpHidden => c.intermediate_size,
                } as u64;
                d * d * 8
            })
            .sum();
        per_layer * c.num_hidden_layers as u64
    }

    /// Calibrates on `records` and initialises adapters block by block (see the module doc).
    /// `progress(done, total)` after each block.
    pub async fn init_adapters_streaming(
        &mut self,
        config: LoraConfig,
        records: &[Record],
        opts: &CalibOptions,
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<StreamedCalibration, EngineError> {
        if self.adapter.is_some() {
            return Err(InitError::AlreadyAdapted.into());
        }
        config.check(true)?;
        let config = LoraConfig {
            targets: self.resolve_targets(&config.targets)?,
            ..config
        };
        let drawn = self.calibration_windows(records, opts)?;
        // The blocks as loaded: later blocks are calibrated on unadapted inputs, as in one pass.
        let base = self.model.clone();
        let device = base.device();
        // One set of rotary tables and masks per window length (the windows share one, mostly).
        let mut contexts = BTreeMap::new();
        for w in &drawn.windows {
            contexts
                .entry(w.len())
                .or_insert_with(|| base.contexts(0, w.len(), &device));
        }
        let mut hidden: Vec<Tensor<3>> = drawn
            .windows
            .iter()
            .map(|w| {
                let ids = TensorData::new(w.iter().map(|&x| x as i64).collect(), [1, w.len()]);
                base.model
                    .embed_tokens
                    .forward(Tensor::<2, Int>::from_data(ids, &device))
            })
            .collect();
        let sites = sites_of(&opts.targets);
        let mut rng = crate::linalg::Rng::new(config.seed);
        let mut record = InitRecord::default();
        let mut energy = BTreeMap::new();
        let (mut windows, mut tokens) = (0, 0);
        let layers = base.num_layers();
        // The null methods read only the r smallest eigenpairs: the partial eigensolver, handed
        // each covariance rather than a copy (at 8192 wide, 0.5 GB each). Its jobs for a layer
        // run while the next blocks are calibrated: up to one layer per worker in flight
        // (within LAYERS_IN_FLIGHT_BYTES), so that the page's maths workers all compute when a
        // layer has one wide covariance. The layers are initialised in order all the same.
        let null = config.method.spec().formula.statistic() == Statistic::NullBasis;
        let null_sites = sites_of(&config.targets);
        let depth = if null { exec.parallelism().max(1) } else { 1 };
        let mut pending: VecDeque<PendingLayer> = VecDeque::new();
        for (layer, block) in base.model.layers.iter().enumerate() {
            let mut acc = CovarianceAccumulator::new(sites.clone(), opts.normalization);
            for (x, w) in hidden.iter_mut().zip(&drawn.windows) {
                let ctx = &contexts[&w.len()];
                *x = block.forward(x.clone(), &ctx.layer(layer), None, layer, &mut acc);
                acc.count_window(w.len());
                crate::device::yield_now().await;
            }
            let mut covs = acc.finish().await.map_err(CalibError::Device)?;
            // The block's transients are gone: their pages go back before this layer's adapters,
            // which live on, are made (`release_free_gpu_memory` says why).
            crate::device::release_free_gpu_memory(&device);
            (windows, tokens) = (covs.windows, covs.tokens);
            let (jobs, traces) = if null {
                let traces: Vec<f64> = null_sites
                    .iter()
                    .map(|&site| covs.sites.get(&(layer, site)).map_or(0.0, |s| s.trace))
                    .collect();
                let jobs = EighCache::send_smallest(&mut covs, layer, &null_sites, config.rank, exec)?;
                (Some(jobs), traces)
            } else {
                (None, Vec::new())
            };
            pending.push_back(PendingLayer {
                layer,
                covs,
                jobs,
                traces,
            });
            let last = layer + 1 == layers;
            loop {
                let later: usize = pending
                    .iter()
                    .skip(1)
                    .filter_map(|p| p.jobs.as_ref())
                    .map(|j| j.input_bytes())
                    .sum();
                let due = last || pending.len() >= depth || later > LAYERS_IN_FLIGHT_BYTES;
                let Some(p) = pending.pop_front_if(|_| due) else {
                    break;
                };
                let layer = p.layer;
                let (this_layer, layer_energy) = self.init_pending(p, &config, &null_sites, exec, &mut rng).await?;
                energy.extend(layer_energy);
                record.factors.extend(this_layer.factors);
                progress(layer + 1, layers);
            }
        }
        self.adapter = Some(AdapterState { config, init: record });
        Ok(StreamedCalibration {
            windows,
            tokens,
            normalization: opts.normalization,
            note: drawn.note,
            input_energy: energy,
        })
    }

    /// Initialises the adapters of a calibrated layer, once its null-basis jobs (if any) are
    /// in; returns their factors and the share of the layer's activation energy each reads.
    async fn init_pending(
        &mut self,
        p: PendingLayer<'_>,
        config: &LoraConfig,
        null_sites: &[Site],
        exec: &dyn Executor,
        rng: &mut crate::linalg::Rng,
    ) -> Result<(InitRecord, BTreeMap<(usize, Target), f64>), EngineError> {
        let mut eighs = EighCache::default();
        let mut null_energy = BTreeMap::new();
        let null = p.jobs.is_some();
        if let Some(jobs) = p.jobs {
            eighs.receive(jobs).await?;
            for (&site, trace) in null_sites.iter().zip(&p.traces) {
                let e = eighs
                    .cached(p.layer, site)
                    .ok_or(CalibError::MissingStats(p.layer, site))?;
                // The rows of A span the null basis P, so the energy A reads is tr(PᵀCP)/tr(C)
                // (eigenvalues at rounding level can come out a hair below zero: they are 0).
                null_energy.insert(site, e.values.iter().map(|v| v.max(0.0)).sum::<f64>() / trace);
            }
        }
        let modules: Vec<(usize, Target)> = config.targets.iter().map(|&t| (p.layer, t)).collect();
        let this_layer = self
            .init_modules(&modules, config, Some(&p.covs), &mut eighs, exec, rng, &mut |_, _| {})
            .await?;
        let energy = if null {
            config
                .targets
                .iter()
                .map(|&target| ((p.layer, target), null_energy[&target.site()]))
                .collect()
        } else {
            input_energy(&this_layer, &|l, t: Target| {
                p.covs.sites.get(&(l, t.site())).map(|s| s.covariance.clone())
            })
        };
        Ok((this_layer, energy))
    }

    /// [`LoadedModel::fine_tune`] with the statistics collected block by block while the
    /// adapters are initialised ([`LoadedModel::init_adapters_streaming`] on `calib_records`):
    /// for models whose covariances do not fit at once.
    #[allow(clippy::too_many_arguments)]
    pub async fn fine_tune_streaming(
        &mut self,
        records: &[Record],
        lora: LoraConfig,
        cfg: &crate::train::TrainConfig,
        calib_records: &[Record],
        opts: &CalibOptions,
        exec: &dyn Executor,
        hooks: &mut dyn super::TrainHooks,
    ) -> Result<(super::TrainReport, StreamedCalibration), EngineError> {
        let data = self.training_data(records, cfg)?;
        hooks.on_data(&data);
        let seen = self
            .init_adapters_streaming(lora, calib_records, opts, exec, &mut |d, t| hooks.on_init(d, t))
            .await?;
        Ok((self.train(data, cfg, None, hooks).await?, seen))
    }
}
