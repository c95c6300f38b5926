//! `bench`: timings that BENCHMARKS.md reports, each printed as one JSON line (the PyTorch side
//! runs in the same invocation through scripts/bench.sh).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use lora_null::calib::{CovarianceAccumulator, Normalization, draw_windows};
use lora_null::engine::{EighCache, Inline, TrainHooks};
use lora_null::io::dataset::Record;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Site;
use lora_null::train::{StepMetrics, TrainConfig};

use super::ModelArgs;
use super::files::read_text;
use super::run::load;

/// `bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Forward-pass throughput over one window of text.
    Forward(BenchForwardArgs),
    /// One LoRA training step (r, all 7 targets, batch × tokens), steady state.
    Train(BenchTrainArgs),
    /// Covariance accumulation over windows, then every eigendecomposition.
    Analysis(BenchAnalysisArgs),
    /// Raw matmul throughput of the backend at the model's shapes (what limits the others).
    Matmul(BenchMatmulArgs),
    /// Dequantisation throughput of every GGUF block type (the reference blocks, tiled).
    Dequant(BenchDequantArgs),
    /// The r smallest eigenvectors of a covariance: the partial eigensolver against the full eigh.
    Eigen(BenchEigenArgs),
    /// The partial eigensolver against the full eigh on a model's MLP covariances.
    EigenModel(BenchEigenModelArgs),
}

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

/// `bench dequant` options.
#[derive(Args)]
pub struct BenchDequantArgs {
    /// Folder of `<TYPE>.bin` block files (scripts/make_reference.py --only quants).
    #[arg(long, default_value = "tests/fixtures/quants")]
    blocks: PathBuf,
    /// MiB of quantised input per type.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Timed repetitions per type (the best is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

/// `bench matmul` options.
#[derive(Args)]
pub struct BenchMatmulArgs {
    /// Where to run: auto, cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    device: lora_null::device::DevicePreference,
    /// Rows of the left operand (tokens).
    #[arg(long, default_value_t = 512)]
    rows: usize,
}

/// `bench forward` options.
#[derive(Args)]
pub struct BenchForwardArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to take the tokens from.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Timed repetitions after one warm-up pass.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// `bench train` options.
#[derive(Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to take the tokens from.
    #[arg(long)]
    text: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
}

/// `bench analysis` options.
#[derive(Args)]
pub struct BenchAnalysisArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Calibration text.
    #[arg(long)]
    text: PathBuf,
    /// Windows.
    #[arg(long, default_value_t = 16)]
    samples: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Write the windows' token ids here (JSON), for the PyTorch side.
    #[arg(long)]
    windows_out: Option<PathBuf>,
}

/// Dispatch.
pub fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Forward(a) => forward(a),
        BenchCommand::Train(a) => train(a),
        BenchCommand::Analysis(a) => analysis(a),
        BenchCommand::Matmul(a) => matmul(a),
        BenchCommand::Dequant(a) => dequant(a),
        BenchCommand::Eigen(a) => eigen(a),
        BenchCommand::EigenModel(a) => eigen_model(a),
    }
}

/// Peak resident memory of this process, bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn forward(a: BenchForwardArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    let (m, choice) = load(&a.model)?;
    let mut ids = m.tokenizer.encode(&text)?;
    if ids.len() < a.tokens {
        anyhow::bail!(
            "{} has {} tokens; --tokens {} needs more text",
            a.text.display(),
            ids.len(),
            a.tokens
        );
    }
    ids.truncate(a.tokens);
    let run = || -> anyhow::Result<f64> {
        let start = Instant::now();
        pollster::block_on(lora_null::eval::forward_sync_probe(&m.model, &ids))?;
        Ok(start.elapsed().as_secs_f64())
    };
    let warmup = run()?;
    let times: Vec<f64> = (0..a.repeats.max(1)).map(|_| run()).collect::<Result<_, _>>()?;
    let med = median(times.clone());
    println!(
        "{}",
        serde_json::json!({
            "bench": "forward", "device": choice.description, "tokens": a.tokens, "warmup_seconds": warmup,
            "seconds": times, "median_seconds": med, "tokens_per_second": a.tokens as f64 / med,
            "peak_rss_bytes": peak_rss(),
        })
    );
    Ok(())
}

/// Collects each step's duration.
struct StepTimes(Vec<f64>);

impl TrainHooks for StepTimes {
    fn on_step(&mut self, m: &StepMetrics) {
        self.0.push(m.step_seconds);
    }
}

fn train(a: BenchTrainArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    let (mut m, choice) = load(&a.model)?;
    let need = a.batch * a.tokens;
    let have = m.tokenizer.encode(&text)?.len();
    if have < need {
        anyhow::bail!(
            "{} has {have} tokens; batch × tokens = {need} needs more text",
            a.text.display()
        );
    }
    // Plain text packs into windows of exactly --tokens tokens (every token scored).
    let cfg = TrainConfig {
        lr: 1e-4,
        steps: Some(a.steps + 1),
        batch: a.batch,
        max_len: a.tokens,
        val_fraction: 0.0,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let lora = LoraConfig::new(InitMethod::Lora, a.rank);
    let mut times = StepTimes(Vec::new());
    pollster::block_on(m.fine_tune(
        &[Record::Text(text)],
        lora,
        &cfg,
        None,
        &mut EighCache::default(),
        &Inline,
        &mut times,
    ))?;
    let (warmup, times) = times.0.split_first().map(|(w, t)| (*w, t.to_vec())).unwrap_or_default();
    let med = median(times.clone());
    println!(
        "{}",
        serde_json::json!({
            "bench": "train", "device": choice.description, "rank": a.rank, "batch": a.batch, "tokens": a.tokens,
            "warmup_seconds": warmup, "seconds": times, "median_seconds": med,
            "tokens_per_second": need as f64 / med, "peak_rss_bytes": peak_rss(),
        })
    );
    Ok(())
}

fn analysis(a: BenchAnalysisArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text)?;
    let (m, choice) = load(&a.model)?;
    let windows = draw_windows(&[Record::Text(text)], &m.tokenizer, a.samples, a.seq_len, 233)?;
    if let Some(path) = &a.windows_out {
        std::fs::write(path, serde_json::to_vec(&windows.windows)?)?;
    }
    let t0 = Instant::now();
    let mut acc = CovarianceAccumulator::new(Site::ALL.to_vec(), Normalization::SignedMax);
    for w in &windows.windows {
        acc.run_window(&m.model, w);
    }
    let covs = pollster::block_on(acc.finish()).map_err(anyhow::Error::msg)?;
    let covariance_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut eighs = EighCache::default();
    let mut by_dim = std::collections::BTreeMap::<usize, (usize, f64)>::new();
    for &(layer, site) in covs.sites.keys() {
        let t = Instant::now();
        pollster::block_on(eighs.get(&covs, layer, site, &Inline))?;
        let d = covs.sites[&(layer, site)].covariance.rows;
        let e = by_dim.entry(d).or_default();
        *e = (e.0 + 1, e.1 + t.elapsed().as_secs_f64());
    }
    let eigh_seconds = t1.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "analysis", "device": choice.description, "windows": windows.windows.len(), "seq_len": a.seq_len,
            "covariance_seconds": covariance_seconds, "eigh_seconds": eigh_seconds,
            "eigh_by_dim": by_dim.iter().map(|(d, (n, s))| serde_json::json!({"dim": d, "count": n, "seconds": s})).collect::<Vec<_>>(),
            "peak_rss_bytes": peak_rss(),
        })
    );
    Ok(())
}

fn matmul(a: BenchMatmulArgs) -> anyhow::Result<()> {
    use burn::tensor::{Distribution, Tensor};
    let choice = pollster::block_on(lora_null::device::select_device(a.device));
    let d = &choice.device;
    // SmolLM2's linear shapes: hidden 576, MLP 1536, vocabulary 49152.
    for (k, n) in [(576, 576), (576, 1536), (1536, 576), (576, 49152)] {
        let x = Tensor::<2>::random([a.rows, k], Distribution::Default, d);
        let w = Tensor::<2>::random([k, n], Distribution::Default, d);
        let run = || {
            let t = Instant::now();
            let _ = pollster::block_on(x.clone().matmul(w.clone()).sum().into_scalar_async::<f32>());
            t.elapsed().as_secs_f64()
        };
        run();
        let med = median((0..5).map(|_| run()).collect());
        let gflops = 2.0 * (a.rows * k * n) as f64 / med / 1e9;
        println!(
            "{}",
            serde_json::json!({"bench": "matmul", "device": choice.description, "m": a.rows, "k": k, "n": n,
                "median_seconds": med, "gflops": gflops})
        );
    }
    Ok(())
}

fn dequant(a: BenchDequantArgs) -> anyhow::Result<()> {
    use lora_null::io::quants::{QuantType, dequantize_into};
    for qtype in QuantType::ALL {
        let path = a.blocks.join(format!("{}.bin", qtype.name()));
        let blocks = super::files::read(&path)?;
        let block = qtype.block_bytes();
        anyhow::ensure!(
            !blocks.is_empty() && blocks.len().is_multiple_of(block),
            "{} does not hold whole {} blocks",
            path.display(),
            qtype.name()
        );
        // Tile the reference blocks up to --mib of input, decoded into one reused buffer.
        let copies = (a.mib << 20).div_ceil(blocks.len());
        let input = blocks.repeat(copies);
        let mut out = vec![0f32; input.len() / block * qtype.block_elems()];
        let mut best = f64::INFINITY;
        for _ in 0..a.repeats.max(1) {
            let t = Instant::now();
            dequantize_into(qtype, &input, &mut out).ok_or_else(|| anyhow::anyhow!("{}: bad lengths", qtype.name()))?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({"bench": "dequant", "device": "lora-null (Rust, 1 thread)", "type": qtype.name(),
                "input_mib": input.len() as f64 / (1u64 << 20) as f64, "seconds": best,
                "input_mb_per_second": input.len() as f64 / 1e6 / best,
                "elements_per_second": out.len() as f64 / best})
        );
    }
    Ok(())
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
        condition: full.values[0] / full.values[d - 1],
        partial,
    })
}

fn eigen(a: BenchEigenArgs) -> anyhow::Result<()> {
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
fn eigen_model(a: BenchEigenModelArgs) -> anyhow::Result<()> {
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
                "per_layer": rows.iter().map(|(l, e)| serde_json::json!({"layer": l, "sin_theta": e.sin_theta, "gap_rel": e.gap, "iterations": e.partial.iterations})).collect::<Vec<_>>()})
        );
    }
    Ok(())
}
