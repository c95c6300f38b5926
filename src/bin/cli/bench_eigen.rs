//! `lora-null bench eigen` and `bench eigen-model`: the partial eigensolver (the r smallest
//! eigenvectors, `linalg::partial`) against the full eigh, on synthetic covariances and on a
//! model's MLP covariances, in one invocation.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use lora_null::calib::{CovarianceAccumulator, Normalization, draw_windows};
use lora_null::io::dataset::Record;
use lora_null::model::Site;

use super::ModelArgs;
use super::bench::peak_rss;
use super::files::read_text;
use super::run::load;

/// `bench eigen-model` options.
#[derive(Args)]
pub struct BenchEigenModelArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Calibration text.
    #[arg(long)]
    text: PathBuf,
    /// Windows.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Eigenvectors wanted (the smallest).
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// The partial solver's precision rule (default: f32's, as the engine's null bases use;
    /// 0 turns it off).
    #[arg(long)]
    precision: Option<f64>,
}

/// `bench eigen` options.
#[derive(Args)]
pub struct BenchEigenArgs {
    /// Covariance widths, each timed with both solvers.
    #[arg(long, value_delimiter = ',', default_value = "1536,4096,8192")]
    dims: Vec<usize>,
    /// Eigenvectors wanted (the smallest).
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Seed of the synthetic activations.
    #[arg(long, default_value_t = 233)]
    seed: u64,
    /// Residual tolerance of the partial solver (default: the library's).
    #[arg(long)]
    tol: Option<f64>,
    /// Extra block vectors of the partial solver (default: the library's).
    #[arg(long)]
    oversample: Option<usize>,
}

/// A covariance like an MLP input's: `XᵀX / T` of `T = 1.25·d` Gaussian tokens whose feature j
/// is scaled by `1/(j+1)` (a power-law spectrum, condition number ~d²·(1−√0.8)⁻²).
fn synthetic_covariance(d: usize, seed: u64) -> lora_null::linalg::Matrix {
    use lora_null::linalg::{Matrix, Rng};
    let t = d + d / 4;
    let mut rng = Rng::new(seed);
    let x = Matrix::from_fn(t, d, |_, j| rng.normal() / (j + 1) as f64);
    let c = x.t().matmul(&x).scale(1.0 / t as f64);
    Matrix::from_fn(d, d, |i, j| 0.5 * (c[(i, j)] + c[(j, i)]))
}

/// One covariance through both solvers: times and the agreement of the r smallest pairs.
struct EigenComparison {
    partial_seconds: f64,
    full_seconds: f64,
    partial: lora_null::linalg::partial::PartialEigh,
    /// sin θ_max = ‖(I − F Fᵀ) P‖₂ between the partial and the full r-dimensional subspaces.
    sin_theta: f64,
    /// max |λᵢ − λᵢ(full)| / λmax.
    value_err: f64,
    /// (λ_{r+1} − λ_r) / λmax: below ~residual, the subspace itself is not determined.
    gap: f64,
    /// tr(PᵀCP) / tr(FᵀCF) − 1: the energy LoRA-Null ranks by, against the optimum.
    energy_excess: f64,
    /// (tr(PᵀCP) − tr(FᵀCF)) / tr(C): the same excess as a share of all the energy (meaningful
    /// when both are rounding noise, with fewer tokens than dimensions).
    energy_excess_of_trace: f64,
    condition: f64,
}

fn compare_eigen(
    c: &lora_null::linalg::Matrix,
    rank: usize,
    opts: &lora_null::linalg::partial::PartialOptions,
) -> anyhow::Result<EigenComparison> {
    use lora_null::linalg::decompose::{eigh, singular_values};
    let d = c.rows;
    let t = Instant::now();
    let partial = lora_null::linalg::partial::smallest_eigenpairs(c, rank, opts)?;
    let partial_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let full = eigh(c)?;
    let full_seconds = t.elapsed().as_secs_f64();
    let r = partial.vectors.cols;
    let want = full.vectors.cols_range(d - r, r);
    let outside = partial.vectors.sub(&want.matmul(&want.t().matmul(&partial.vectors)));
    let energy = |v: &lora_null::linalg::Matrix| v.t().matmul(&c.matmul(v)).trace();
    Ok(EigenComparison {
        partial_seconds,
        full_seconds,
        sin_theta: singular_values(&outside)?[0],
        value_err: (0..r)
            .map(|j| (partial.values[j] - full.values[d - 1 - j]).abs())
            .fold(0.0, f64::max)
            / full.values[0],
        gap: (full.values[d - 1 - r] - full.values[d - r]) / full.values[0],
        energy_excess: energy(&partial.vectors) / energy(&want) - 1.0,
        energy_excess_of_trace: (energy(&partial.vectors) - energy(&want)) / c.trace(),
        condition: full.values[0] / full.values[d - 1],
        partial,
    })
}

pub fn eigen(a: BenchEigenArgs) -> anyhow::Result<()> {
    let mut opts = lora_null::linalg::partial::PartialOptions::default();
    opts.tol = a.tol.unwrap_or(opts.tol);
    opts.oversample = a.oversample.unwrap_or(opts.oversample);
    for &d in &a.dims {
        let c = synthetic_covariance(d, a.seed);
        let e = compare_eigen(&c, a.rank, &opts)?;
        println!(
            "{}",
            serde_json::json!({"bench": "eigen", "device": "lora-null (Rust, faer, rayon)",
                "dim": d, "rank": e.partial.vectors.cols, "tol": opts.tol, "oversample": opts.oversample, "partial_seconds": e.partial_seconds,
                "full_seconds": e.full_seconds, "speedup": e.full_seconds / e.partial_seconds,
                "iterations": e.partial.iterations, "converged": e.partial.converged,
                "max_residual": e.partial.max_residual, "sin_theta_max": e.sin_theta,
                "eigenvalue_error_rel_max": e.value_err, "gap_rel": e.gap,
                "energy_excess_rel": e.energy_excess, "condition": e.condition,
                "peak_rss_bytes": peak_rss()})
        );
    }
    Ok(())
}

/// The same comparison on a real model's covariances (every layer of the chosen sites),
/// summarised per site.
pub fn eigen_model(a: BenchEigenModelArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    let (m, _) = load(&a.model)?;
    let windows = draw_windows(&[Record::Text(text)], &m.tokenizer, a.samples, a.seq_len, 233)?;
    let sites = [Site::MlpInput, Site::MlpHidden];
    let mut acc = CovarianceAccumulator::new(sites.to_vec(), Normalization::SignedMax);
    for w in &windows.windows {
        acc.run_window(&m.model, w);
    }
    let covs = pollster::block_on(acc.finish()).map_err(anyhow::Error::msg)?;
    // Force the iteration even below the full-eigh cut-over, so it is what gets tested.
    let opts = lora_null::linalg::partial::PartialOptions {
        full_below: 0,
        precision: a.precision.unwrap_or(lora_null::linalg::partial::F32_PRECISION),
        ..Default::default()
    };
    for site in sites {
        let mut rows = Vec::new();
        for (&(layer, s), stats) in &covs.sites {
            if s == site {
                rows.push((layer, compare_eigen(&stats.covariance, a.rank, &opts)?));
            }
        }
        let max = |f: &dyn Fn(&EigenComparison) -> f64| rows.iter().map(|(_, e)| f(e)).fold(0.0, f64::max);
        let min = |f: &dyn Fn(&EigenComparison) -> f64| rows.iter().map(|(_, e)| f(e)).fold(f64::INFINITY, f64::min);
        let (partial, full): (f64, f64) = rows
            .iter()
            .fold((0.0, 0.0), |(p, f), (_, e)| (p + e.partial_seconds, f + e.full_seconds));
        println!(
            "{}",
            serde_json::json!({"bench": "eigen-model", "site": site.name(), "layers": rows.len(),
                "dim": rows.first().map(|(_, e)| e.partial.vectors.rows), "rank": a.rank,
                "tokens": windows.windows.iter().map(Vec::len).sum::<usize>(),
                "partial_seconds": partial, "full_seconds": full, "speedup": full / partial,
                "all_converged": rows.iter().all(|(_, e)| e.partial.converged),
                "iterations_max": max(&|e| e.partial.iterations as f64),
                "max_residual": max(&|e| e.partial.max_residual), "sin_theta_max": max(&|e| e.sin_theta),
                "gap_rel_min": min(&|e| e.gap), "eigenvalue_error_rel_max": max(&|e| e.value_err),
                "energy_excess_rel_max": max(&|e| e.energy_excess),
                "energy_excess_of_trace_max": max(&|e| e.energy_excess_of_trace),
                "precision": opts.precision,
                "per_layer": rows.iter().map(|(l, e)| serde_json::json!({"layer": l, "sin_theta": e.sin_theta, "gap_rel": e.gap, "iterations": e.partial.iterations})).collect::<Vec<_>>()})
        );
    }
    Ok(())
}
