//! Adapters on the loaded model: initialising them (one job per module, through the executor),
//! attaching a PEFT adapter from files, and the metrics of what they do to the knowledge
//! activations.

use std::collections::BTreeMap;

use super::analyze::Calibration;
use super::jobs::{EighCache, Executor, InFlight, JobFuture, wrong_kind};
use super::{EngineError, LoadedModel};
use crate::calib::{CalibError, Covariances};
use crate::io::peft::{PeftAdapter, read_adapter};
use crate::linalg::jobs::{Job, JobOutput};
use crate::lora::export::attach_adapter;
use crate::lora::init::{attach_factors, check_rank, factors_job};
use crate::lora::metrics::{UpdateMetrics, input_energy, mean_metrics, update_and_original, update_metrics};
use crate::lora::{InitError, InitRecord, LoraConfig};
use crate::model::arch::sites_of;
use crate::model::weights::read_matrix;
use crate::model::{Projection, Site, Target};

/// Adapters attached by initialisation, with what the export conversion needs.
#[derive(Debug, Clone)]
pub struct AdapterState {
    /// Method, rank, alpha, targets.
    pub config: LoraConfig,
    /// The initial factors, f32.
    pub init: InitRecord,
}

impl LoadedModel {
    /// The requested targets as this model's architecture has them (on Phi-3, `q`/`k`/`v` name
    /// the fused `qkv_proj` and `gate`/`up` the fused `gate_up_proj`); an error names the layers
    /// it has.
    pub fn resolve_targets(&self, requested: &[Target]) -> Result<Vec<Target>, EngineError> {
        self.config
            .model_type
            .spec()
            .resolve(requested)
            .map_err(EngineError::Targets)
    }

    /// The layer `target` of block `layer` (an error if the architecture has none).
    pub(crate) fn linear(&self, layer: usize, target: Target) -> Result<&crate::lora::LoraLinear, EngineError> {
        self.model
            .linear(layer, target)
            .ok_or_else(|| EngineError::Targets(format!("layer {layer} has no {}", target.module_name())))
    }

    /// Initialises adapters on every target of every layer, changing the base weights for the
    /// methods that do. `progress(done, total)` after each module.
    pub async fn init_adapters(
        &mut self,
        config: LoraConfig,
        calib: Option<&Calibration>,
        eighs: &mut EighCache,
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<&AdapterState, EngineError> {
        if self.adapter.is_some() {
            return Err(InitError::AlreadyAdapted.into());
        }
        config.check(calib.is_some())?;
        let config = LoraConfig {
            targets: self.resolve_targets(&config.targets)?,
            ..config
        };
        let mut rng = crate::linalg::Rng::new(config.seed);
        let layers = self.model.num_layers();
        let covs = calib.map(|c| &c.covariances);
        if let Some(c) = covs.filter(|_| config.method.needs_calibration()) {
            let keys: Vec<(usize, Site)> = (0..layers)
                .flat_map(|l| sites_of(&config.targets).into_iter().map(move |s| (l, s)))
                .collect();
            eighs.fill(c, &keys, exec, &mut |_, _| {}).await?;
        }
        let modules: Vec<(usize, Target)> = (0..layers)
            .flat_map(|l| config.targets.iter().map(move |&t| (l, t)))
            .collect();
        let record = self
            .init_modules(&modules, &config, covs, eighs, exec, &mut rng, progress)
            .await?;
        Ok(self.adapter.insert(AdapterState { config, init: record }))
    }

    /// Initialises and attaches the adapters of `modules` (each drawing its seed from `rng` in
    /// the order given), their jobs several at a time through `exec` ([`InFlight`]: the page's
    /// maths workers side by side); returns their initial factors. `progress(done, total)` after
    /// each module.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn init_modules(
        &mut self,
        modules: &[(usize, Target)],
        config: &LoraConfig,
        covs: Option<&Covariances>,
        eighs: &mut EighCache,
        exec: &dyn Executor,
        rng: &mut crate::linalg::Rng,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<InitRecord, EngineError> {
        let total = modules.len();
        let mut jobs = InFlight::new(exec);
        let mut done = 0;
        let mut record = InitRecord::default();
        for (i, &(layer, target)) in modules.iter().enumerate() {
            let job = self
                .module_job(layer, target, config, covs, eighs, exec, rng.next_u64())
                .await?;
            jobs.send(exec, (layer, target), job);
            while let Some(((layer, target), job)) = jobs.due(i + 1 == total) {
                let f = self.attach_job(layer, target, config, job).await?;
                record.factors.insert((layer, target), f);
                done += 1;
                progress(done, total);
            }
        }
        Ok(record)
    }

    /// The job that computes one module's factors: its weight, and the covariance's statistic
    /// where the method needs it.
    #[allow(clippy::too_many_arguments)]
    async fn module_job(
        &self,
        layer: usize,
        target: Target,
        config: &LoraConfig,
        covs: Option<&Covariances>,
        eighs: &mut EighCache,
        exec: &dyn Executor,
        seed: u64,
    ) -> Result<Job, EngineError> {
        let w = read_matrix(self.linear(layer, target)?.base().weight_out_in())
            .await
            .map_err(CalibError::Device)?;
        check_rank(config.rank, layer, target, w.rows, w.cols)?;
        let stats = match covs {
            Some(c) if config.method.needs_calibration() => {
                let (stats, e) = eighs.site(c, layer, target.site(), exec).await?;
                Some((&stats.covariance, e))
            }
            _ => None,
        };
        Ok(factors_job(config.method, w, config.rank, config.scale(), stats, seed))
    }

    /// Awaits one module's factors and attaches them; returns them.
    async fn attach_job(
        &mut self,
        layer: usize,
        target: Target,
        config: &LoraConfig,
        job: JobFuture<'_>,
    ) -> Result<(crate::io::HostTensor, crate::io::HostTensor), EngineError> {
        let context = || format!("layer {layer} {}", target.module_name());
        let f = match job.await.map_err(EngineError::job(context()))? {
            JobOutput::Factors(f) => f,
            _ => return Err(EngineError::job(context())(wrong_kind())),
        };
        let device = self.model.device();
        let linear = self
            .model
            .linear_mut(layer, target)
            .ok_or_else(|| EngineError::Targets(format!("layer {layer} has no {}", target.module_name())))?;
        Ok(attach_factors(linear, &f, config.scale(), config.method, &device))
    }

    /// Attaches a PEFT adapter directory's files (ours or anyone's) to the base model.
    pub fn attach_peft(&mut self, config_json: &[u8], weights: &[u8]) -> Result<PeftAdapter, EngineError> {
        let adapter = read_adapter(config_json, weights)?;
        let device = self.model.device();
        attach_adapter(&mut self.model, &adapter, &device)?;
        Ok(adapter)
    }

    /// Numbers about the initialised adapters for a summary.
    pub fn adapter_summary(&self) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        if let Some(s) = &self.adapter {
            out.insert("method".into(), s.config.method.name().into());
            out.insert("rank".into(), s.config.rank.into());
            out.insert("alpha".into(), s.config.alpha.into());
            out.insert("modules".into(), s.init.factors.len().into());
        }
        out
    }

    /// Per adapted module: the share of the calibration activations' energy its initial down
    /// projection reads (tiny for the null-space methods, large for PiSSA).
    pub fn adapter_input_energy(&self, calib: &Calibration) -> BTreeMap<(usize, Target), f64> {
        let Some(state) = &self.adapter else {
            return BTreeMap::new();
        };
        let covs = &calib.covariances;
        input_energy(&state.init, &|layer, target: Target| {
            covs.sites.get(&(layer, target.site())).map(|s| s.covariance.clone())
        })
    }

    /// How the trained updates disturb the calibration (knowledge) activations, averaged over
    /// the adapted modules (see [`UpdateMetrics`]); `rank` sizes the top subspace.
    pub async fn update_metrics(
        &self,
        calib: &Calibration,
        eighs: &mut EighCache,
        rank: usize,
        exec: &dyn Executor,
    ) -> Result<UpdateMetrics, EngineError> {
        let state = self
            .adapter
            .as_ref()
            .ok_or(EngineError::Export(crate::lora::export::ExportError::NoAdapters))?;
        let covs = &calib.covariances;
        let mut per_module = Vec::new();
        for &(layer, target) in state.init.factors.keys() {
            let changes_base = state.config.method.changes_base();
            let Some((delta, w)) = update_and_original(&self.model, &state.init, layer, target, changes_base).await?
            else {
                continue;
            };
            let (stats, e) = eighs.site(covs, layer, target.site(), exec).await?;
            per_module.push(update_metrics(&delta, &w, &stats.covariance, e, rank));
        }
        Ok(mean_metrics(&per_module))
    }
}
