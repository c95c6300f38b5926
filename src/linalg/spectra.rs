//! Spectrum summaries: effective rank (Roy & Vetterli 2007), energy counts, stable rank, and
//! the energy a subspace captures.

use super::Matrix;

/// Numbers that summarise one spectrum.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpectrumSummary {
    /// `exp(−Σ pᵢ ln pᵢ)` with `pᵢ = σᵢ / Σσ` (σ: singular values; √λ for a covariance).
    pub effective_rank: f64,
    /// Smallest k whose top-k energies (σ² or λ) hold 90% of the total.
    pub rank_90: usize,
    /// Same for 99%.
    pub rank_99: usize,
    /// Total energy over the largest: `Σσ² / σ₁²` (`trace(C)/λ₁` for a covariance).
    pub stable_rank: f64,
}

/// Roy–Vetterli effective rank of non-negative singular values (negatives clamp to 0).
pub fn effective_rank(singular_values: &[f64]) -> f64 {
    let total: f64 = singular_values.iter().map(|s| s.max(0.0)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = singular_values
        .iter()
        .map(|s| s.max(0.0) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// Smallest k such that the k largest energies hold at least `fraction` of the total.
pub fn energy_count(energies_desc: &[f64], fraction: f64) -> usize {
    let total: f64 = energies_desc.iter().map(|e| e.max(0.0)).sum();
    if total <= 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    for (k, e) in energies_desc.iter().enumerate() {
        acc += e.max(0.0);
        if acc >= fraction * total {
            return k + 1;
        }
    }
    energies_desc.len()
}

/// Summary from energies sorted descending (λ of a covariance, or σ² of a weight).
pub fn summarize(energies_desc: &[f64]) -> SpectrumSummary {
    let sv: Vec<f64> = energies_desc.iter().map(|e| e.max(0.0).sqrt()).collect();
    let total: f64 = energies_desc.iter().map(|e| e.max(0.0)).sum();
    let top = energies_desc.first().copied().unwrap_or(0.0);
    SpectrumSummary {
        effective_rank: effective_rank(&sv),
        rank_90: energy_count(energies_desc, 0.90),
        rank_99: energy_count(energies_desc, 0.99),
        stable_rank: if top > 0.0 { total / top } else { 0.0 },
    }
}

/// `trace(Pᵀ C P) / trace(C)`: the share of activation energy in span(P) (P orthonormal).
pub fn activation_energy(c: &Matrix, p: &Matrix) -> f64 {
    let total = c.trace();
    if total <= 0.0 {
        return 0.0;
    }
    let cp = c.matmul(p);
    let captured: f64 = (0..p.cols)
        .map(|j| (0..p.rows).map(|i| p[(i, j)] * cp[(i, j)]).sum::<f64>())
        .sum();
    (captured / total).max(0.0)
}

/// `‖W P‖²_F / ‖W‖²_F`: the share of the weight's energy acting on span(P).
pub fn weight_energy(w: &Matrix, p: &Matrix) -> f64 {
    let total = w.frobenius_sq();
    if total <= 0.0 {
        return 0.0;
    }
    w.matmul(p).frobenius_sq() / total
}

/// `tr(Δ C Δᵀ) / tr(W C Wᵀ)`: the output energy an update Δ adds on inputs whose second moment
/// is C, relative to the base weight's output energy on them. Zero means the update is silent on
/// that distribution.
pub fn output_disturbance(delta: &Matrix, w: &Matrix, c: &Matrix) -> f64 {
    let energy = |m: &Matrix| -> f64 {
        let mc = m.matmul(c);
        mc.data.iter().zip(&m.data).map(|(a, b)| a * b).sum()
    };
    let base = energy(w);
    if base <= 0.0 { 0.0 } else { energy(delta) / base }
}
