//! The spectra report (`spectra.json`, what the page plots): eigenvalues of each activation
//! covariance, singular values of each target weight, their summaries, and how much energy the
//! chosen null subspace (the r smallest eigen-directions) and the top-r subspace capture.
//!
//! Plain data and pure maths (no burn): the engine computes the decompositions and calls the
//! builders here; the page only reads the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::linalg::Matrix;
use crate::linalg::decompose::Eigh;
use crate::linalg::init::{null_basis, top_basis};
use crate::linalg::spectra::{SpectrumSummary, activation_energy, summarize, weight_energy};
use crate::model::{Site, Target};

/// How each window's activations are scaled before `X̃ᵀX̃`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// `X̃ = X / |max(X)|` with the *signed* maximum over the whole window, exactly as the
    /// LoRA-Null and CorDA code do (the default).
    #[default]
    SignedMax,
    /// `X̃ = X`: the plain uncentred second moment per window.
    None,
}

impl std::str::FromStr for Normalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signed-max" | "max" => Ok(Self::SignedMax),
            "none" | "plain" => Ok(Self::None),
            other => Err(format!("unknown normalisation `{other}`; use signed-max or none")),
        }
    }
}

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

/// The version of `spectra.json` this code writes.
pub const SCHEMA: u32 = 1;

/// The spectrum of one covariance with eigendecomposition `e`, for subspaces of rank `rank`.
pub fn site_spectrum(e: &Eigh, trace: f64, rank: usize) -> SiteSpectrum {
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
    SiteSpectrum {
        summary: summarize(&eigenvalues),
        trace,
        null_energy: share(&eigenvalues[eigenvalues.len() - r..]),
        top_energy: share(&eigenvalues[..r]),
        eigenvalues,
    }
}

/// The spectrum of one weight `w` (`[out, in]`, singular values `sv`) against the covariance `c`
/// of its input (eigendecomposition `e`).
pub fn module_spectrum(site: Site, w: &Matrix, sv: Vec<f64>, c: &Matrix, e: &Eigh, rank: usize) -> ModuleSpectrum {
    let r = rank.min(e.values.len());
    let (p_null, p_top) = (null_basis(e, r), top_basis(e, r));
    let energies: Vec<f64> = sv.iter().map(|s| s * s).collect();
    ModuleSpectrum {
        site,
        shape: [w.rows, w.cols],
        summary: summarize(&energies),
        activation_energy_null: activation_energy(c, &p_null),
        activation_energy_top: activation_energy(c, &p_top),
        weight_energy_null: weight_energy(w, &p_null),
        weight_energy_top: weight_energy(w, &p_top),
        singular_values: sv,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::linalg::decompose::eigh;

    #[test]
    fn a_diagonal_covariance_puts_its_smallest_eigenvalues_in_the_null_share() {
        let c = Matrix::from_fn(4, 4, |i, j| if i == j { [8.0, 4.0, 2.0, 1.0][i] } else { 0.0 });
        let s = site_spectrum(&eigh(&c).unwrap(), c.trace(), 1);
        assert_eq!(s.eigenvalues, vec![8.0, 4.0, 2.0, 1.0]);
        assert!((s.null_energy - 1.0 / 15.0).abs() < 1e-12);
        assert!((s.top_energy - 8.0 / 15.0).abs() < 1e-12);
        // A weight that reads only the largest direction puts all its energy in the top space.
        let w = Matrix::from_fn(2, 4, |i, j| if j == 0 { 1.0 + i as f64 } else { 0.0 });
        let m = module_spectrum(Site::AttnInput, &w, vec![5f64.sqrt(), 0.0], &c, &eigh(&c).unwrap(), 1);
        assert!((m.weight_energy_top - 1.0).abs() < 1e-12 && m.weight_energy_null.abs() < 1e-12);
        assert!((m.activation_energy_null - 1.0 / 15.0).abs() < 1e-12);
        assert_eq!(m.shape, [2, 4]);
    }
}
