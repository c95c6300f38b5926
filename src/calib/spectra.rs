//! Per-layer spectra: eigenvalues of each activation covariance, singular values of each target
//! weight, their summaries, and how much energy the chosen null subspace (the r smallest
//! eigen-directions) and the top-r subspace capture. This is what `spectra.json` holds and what
//! the app plots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CalibError, Covariances, EighCache, Normalization};
use crate::linalg::init::{null_basis, top_basis};
use crate::linalg::jobs::{Executor, Job, expect_values};
use crate::linalg::spectra::{SpectrumSummary, activation_energy, summarize, weight_energy};
use crate::model::weights::read_matrix;
use crate::model::{LlamaForCausalLM, Site, Target};

/// One activation statistic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteSpectrum {
    /// Eigenvalues of C, descending (tiny negative rounding clamped to 0).
    pub eigenvalues: Vec<f64>,
    /// Summary of the eigenvalues (effective rank uses √λ).
    pub summary: SpectrumSummary,
    /// `trace(C)`.
    pub trace: f64,
    /// Share of activation energy in the r smallest directions (the null subspace).
    pub null_energy: f64,
    /// Share in the r largest directions.
    pub top_energy: f64,
}

/// One target weight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleSpectrum {
    /// Which input statistic it reads.
    pub site: Site,
    /// `[out, in]`.
    pub shape: [usize; 2],
    /// Singular values, descending.
    pub singular_values: Vec<f64>,
    /// Summary of σ² energies.
    pub summary: SpectrumSummary,
    /// `trace(PᵀCP)/trace(C)` for P = null basis.
    pub activation_energy_null: f64,
    /// Same for the top-r basis.
    pub activation_energy_top: f64,
    /// `‖W P‖²_F / ‖W‖²_F` for P = null basis.
    pub weight_energy_null: f64,
    /// Same for the top-r basis.
    pub weight_energy_top: f64,
}

/// Spectra of one block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSpectra {
    /// Block index.
    pub layer: usize,
    /// Per input site.
    pub sites: BTreeMap<Site, SiteSpectrum>,
    /// Per target module (`q_proj`, ...).
    pub modules: BTreeMap<Target, ModuleSpectrum>,
}

/// The whole analysis (`spectra.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpectraReport {
    /// Schema version of this file.
    pub schema: u32,
    /// The subspace rank r.
    pub rank: usize,
    /// Per-window normalisation used for C.
    pub normalization: Normalization,
    /// Calibration windows.
    pub windows: usize,
    /// Calibration tokens.
    pub tokens: usize,
    /// Analysed modules.
    pub targets: Vec<Target>,
    /// Per block.
    pub layers: Vec<LayerSpectra>,
}

/// Spectra of one block (the unit of work the app schedules, so the page stays responsive).
pub async fn analyze_layer(
    model: &LlamaForCausalLM,
    covs: &Covariances,
    eighs: &mut EighCache,
    layer: usize,
    targets: &[Target],
    rank: usize,
    exec: &dyn Executor,
) -> Result<LayerSpectra, CalibError> {
    let mut sites = BTreeMap::new();
    let mut site_list: Vec<Site> = targets.iter().map(|t| t.site()).collect();
    site_list.dedup();
    for &site in &site_list {
        let stats = covs
            .sites
            .get(&(layer, site))
            .ok_or(CalibError::MissingStats(layer, site))?;
        let e = eighs.get(covs, layer, site, exec).await?;
        let eigenvalues: Vec<f64> = e.values.iter().map(|v| v.max(0.0)).collect();
        let total: f64 = eigenvalues.iter().sum();
        let r = rank.min(eigenvalues.len());
        let share = |vals: &[f64]| {
            if total > 0.0 {
                vals.iter().sum::<f64>() / total
            } else {
                0.0
            }
        };
        sites.insert(
            site,
            SiteSpectrum {
                summary: summarize(&eigenvalues),
                trace: stats.trace,
                null_energy: share(&eigenvalues[eigenvalues.len() - r..]),
                top_energy: share(&eigenvalues[..r]),
                eigenvalues,
            },
        );
    }
    let mut modules = BTreeMap::new();
    for &target in targets {
        let w = read_matrix(model.linear(layer, target).weight_out_in())
            .await
            .map_err(CalibError::Device)?;
        let site = target.site();
        let c = &covs.sites[&(layer, site)].covariance;
        let e = eighs.get(covs, layer, site, exec).await?;
        let r = rank.min(e.values.len());
        let (p_null, p_top) = (null_basis(e, r), top_basis(e, r));
        let sv = exec
            .submit(Job::SingularValues(w.clone()))
            .await
            .and_then(expect_values)
            .map_err(|source| CalibError::Weight {
                layer,
                module: target.module_name(),
                source,
            })?;
        let energies: Vec<f64> = sv.iter().map(|s| s * s).collect();
        modules.insert(
            target,
            ModuleSpectrum {
                site,
                shape: [w.rows, w.cols],
                summary: summarize(&energies),
                activation_energy_null: activation_energy(c, &p_null),
                activation_energy_top: activation_energy(c, &p_top),
                weight_energy_null: weight_energy(&w, &p_null),
                weight_energy_top: weight_energy(&w, &p_top),
                singular_values: sv,
            },
        );
    }
    Ok(LayerSpectra { layer, sites, modules })
}

/// Spectra of every block; `progress(done, total)` after each block.
pub async fn analyze(
    model: &LlamaForCausalLM,
    covs: &Covariances,
    eighs: &mut EighCache,
    targets: &[Target],
    rank: usize,
    exec: &dyn Executor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SpectraReport, CalibError> {
    let n = model.model.layers.len();
    let mut layers = Vec::with_capacity(n);
    for layer in 0..n {
        layers.push(analyze_layer(model, covs, eighs, layer, targets, rank, exec).await?);
        progress(layer + 1, n);
    }
    Ok(SpectraReport {
        schema: 1,
        rank,
        normalization: covs.normalization,
        windows: covs.windows,
        tokens: covs.tokens,
        targets: targets.to_vec(),
        layers,
    })
}
