//! `bench`: timings that BENCHMARKS.md reports, each printed as one JSON line (the PyTorch side
//! runs in the same invocation through scripts/bench.sh).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use lora_null::calib::{CovarianceAccumulator, Normalization, draw_windows};
use lora_null::engine::{EighCache, Inline, LoadedModel, TrainHooks};
use lora_null::io::dataset::Record;
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Site;
use lora_null::train::{StepMetrics, TrainConfig};

use super::ModelArgs;
use super::bench_eigen::{self as eigen, BenchEigenArgs, BenchEigenModelArgs};
use super::bench_matmul::{BenchMatmulCpuArgs, matmul_cpu};
use super::bench_packed::{self as packed, BenchPackedArgs};
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
    /// The CPU matmul candidates (burn flex, gemm, faer, matrixmultiply) on the model's shapes.
    MatmulCpu(BenchMatmulCpuArgs),
    /// Dequantisation throughput of every GGUF block type (the reference blocks, tiled).
    Dequant(BenchDequantArgs),
    /// The r smallest eigenvectors of a covariance: the partial eigensolver against the full eigh.
    Eigen(BenchEigenArgs),
    /// The partial eigensolver against the full eigh on a model's MLP covariances.
    EigenModel(BenchEigenModelArgs),
    /// Forward pass and LoRA training step with the base packed against the base in f32.
    Packed(BenchPackedArgs),
    /// A packed model's matrices dequantised on the device: the one kernel against the tensor
    /// operations, alternately in one invocation.
    DequantDevice(BenchDequantDeviceArgs),
}

/// `bench dequant-device` options.
#[derive(Args)]
pub struct BenchDequantDeviceArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed passes over every packed matrix, per way (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Rows of the activations multiplied by every matrix in the product comparison (the fused
    /// dequantising product against the kernel's f32 matrix times burn's product); 0 skips it.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
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
    /// On a GPU with a packed base (`--base packed`), multiply the packed matrices by the fused
    /// dequantising product (`model::dequant_kernel`) instead of dequantising each into an f32
    /// matrix for burn's product (the default), to compare the two.
    #[arg(long)]
    fused_product: bool,
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
    /// On a GPU, train RMSNorm and SwiGLU as burn's tensor operations instead of our kernels
    /// (`model::gpu_ops`), to compare the two.
    #[arg(long)]
    tensor_ops: bool,
    /// On a GPU with a packed base (`--base packed`), multiply the packed matrices by the fused
    /// dequantising product (`model::dequant_kernel`) instead of dequantising each into an f32
    /// matrix for burn's product (the default), to compare the two.
    #[arg(long)]
    fused_product: bool,
    /// On a GPU, keep its memory as the browser does (one exclusive page per allocation), to
    /// measure the page's GPU memory natively.
    #[arg(long)]
    browser_pools: bool,
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
        BenchCommand::MatmulCpu(a) => matmul_cpu(a),
        BenchCommand::Dequant(a) => dequant(a),
        BenchCommand::Eigen(a) => eigen::eigen(a),
        BenchCommand::EigenModel(a) => eigen::eigen_model(a),
        BenchCommand::Packed(a) => packed::packed(a),
        BenchCommand::DequantDevice(a) => dequant_device(a),
    }
}

/// Peak resident memory of this process, bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn forward(a: BenchForwardArgs) -> anyhow::Result<()> {
    lora_null::model::dequant::use_fused_product(a.fused_product);
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
    let (warmup, times) = time_forward(&m, &ids, a.repeats)?;
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

/// One warm-up forward pass over `ids`, then `repeats` timed ones (seconds).
pub fn time_forward(m: &LoadedModel, ids: &[u32], repeats: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    let run = || -> anyhow::Result<f64> {
        let start = Instant::now();
        pollster::block_on(lora_null::eval::forward_sync_probe(&m.model, ids))?;
        Ok(start.elapsed().as_secs_f64())
    };
    let warmup = run()?;
    let times = (0..repeats.max(1)).map(|_| run()).collect::<Result<_, _>>()?;
    Ok((warmup, times))
}

/// Collects each step's duration.
struct StepTimes(Vec<f64>);

impl TrainHooks for StepTimes {
    fn on_step(&mut self, m: &StepMetrics) {
        self.0.push(m.step_seconds);
    }
}

fn train(a: BenchTrainArgs) -> anyhow::Result<()> {
    lora_null::model::gpu_ops::use_kernels(!a.tensor_ops);
    lora_null::model::dequant::use_fused_product(a.fused_product);
    lora_null::device::use_browser_pools(a.browser_pools);
    let text = read_text(&a.text)?;
    let (mut m, choice) = load(&a.model)?;
    let loaded = lora_null::train::metrics::GpuMemory::of(&choice.device);
    let peak = PoolPeak::watch(&choice.device);
    let need = a.batch * a.tokens;
    let have = m.tokenizer.encode(&text)?.len();
    if have < need {
        anyhow::bail!(
            "{} has {have} tokens; batch × tokens = {need} needs more text",
            a.text.display()
        );
    }
    let (warmup, times) = time_train(&mut m, &text, (a.rank, a.batch, a.tokens), a.steps, None)?;
    let (peak_in_use, peak_reserved) = peak.stop();
    let med = median(times.clone());
    println!(
        "{}",
        serde_json::json!({
            "bench": "train", "device": choice.description, "rank": a.rank, "batch": a.batch, "tokens": a.tokens, "gpu_kernels": !a.tensor_ops, "fused_product": a.fused_product,
            "warmup_seconds": warmup, "seconds": times, "median_seconds": med,
            "tokens_per_second": need as f64 / med, "peak_rss_bytes": peak_rss(),
            "browser_pools": a.browser_pools, "gpu_memory_loaded": loaded,
            "gpu_memory_after_steps": lora_null::train::metrics::GpuMemory::of(&choice.device),
            "gpu_peak_in_use_bytes": peak_in_use, "gpu_peak_reserved_bytes": peak_reserved,
        })
    );
    Ok(())
}

/// The most a GPU device's pools held while it was watched, read every 50 ms from a thread of
/// its own (a peak between two readings is missed). Nothing on the CPU backend.
struct PoolPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl PoolPeak {
    fn watch(device: &burn::tensor::Device) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = lora_null::train::metrics::GpuMemory::of(device).map(|_| {
            let (device, stop) = (device.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut in_use, mut reserved) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(g) = lora_null::train::metrics::GpuMemory::of(&device) {
                        in_use = g.in_use.max(in_use);
                        reserved = g.reserved.max(reserved);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                (in_use, reserved)
            })
        });
        Self { stop, thread }
    }

    /// The peaks in use and reserved, bytes (`None`s on the CPU backend).
    fn stop(self) -> (Option<u64>, Option<u64>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.map(|t| t.join()) {
            Some(Ok((in_use, reserved))) => (Some(in_use), Some(reserved)),
            _ => (None, None),
        }
    }
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
    // The same decompositions side by side, one per thread (`Threads`, what `analyze` runs),
    // widest first; their eigenvalues must be the one-at-a-time run's.
    let keys: Vec<_> = covs.sites.keys().copied().collect();
    let threads = lora_null::engine::Threads::new();
    let t2 = Instant::now();
    let mut side_by_side = EighCache::default();
    pollster::block_on(side_by_side.fill(&covs, &keys, &threads, &mut |_, _| {}))?;
    let side_by_side_seconds = t2.elapsed().as_secs_f64();
    let worst = keys
        .iter()
        .filter_map(|&(layer, site)| Some((eighs.cached(layer, site)?, side_by_side.cached(layer, site)?)))
        .flat_map(|(a, b)| {
            a.values
                .iter()
                .zip(&b.values)
                .map(|(x, y)| (x - y).abs() / a.values[0].abs().max(f64::MIN_POSITIVE))
        })
        .fold(0.0, f64::max);
    anyhow::ensure!(
        worst < 1e-9,
        "the side-by-side decompositions differ from the one-at-a-time ones by {worst:e} of the largest eigenvalue"
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "analysis", "device": choice.description, "windows": windows.windows.len(), "seq_len": a.seq_len,
            "covariance_seconds": covariance_seconds, "eigh_seconds": eigh_seconds,
            "eigh_side_by_side_seconds": side_by_side_seconds, "side_by_side_threads": lora_null::engine::Executor::parallelism(&threads),
            "side_by_side_vs_one_at_a_time": eigh_seconds / side_by_side_seconds,
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

/// LoRA (rank `rank`, the 7 default targets) on `text` packed into windows of exactly `tokens`
/// tokens (every token scored), batch `batch`: one warm-up step, then `steps` timed ones.
pub fn time_train(
    m: &mut LoadedModel,
    text: &str,
    (rank, batch, tokens): (usize, usize, usize),
    steps: usize,
    checkpoint_blocks: Option<bool>,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let cfg = TrainConfig {
        checkpoint_blocks,
        lr: 1e-4,
        steps: Some(steps + 1),
        batch,
        max_len: tokens,
        val_fraction: 0.0,
        warmup_ratio: 0.0,
        ..TrainConfig::default()
    };
    let lora = LoraConfig::new(InitMethod::Lora, rank);
    let mut times = StepTimes(Vec::new());
    pollster::block_on(m.fine_tune(
        &[Record::Text(text.to_string())],
        lora,
        &cfg,
        None,
        &mut EighCache::default(),
        &Inline,
        &mut times,
    ))?;
    Ok(times.0.split_first().map(|(w, t)| (*w, t.to_vec())).unwrap_or_default())
}

/// Every device-laid-out matrix of the model dequantised once per pass, by the kernel and by the
/// tensor operations in turn (`--repeats` passes each, alternating, after one warm-up pass each
/// that compiles the kernels); the device is synchronised after each pass.
fn dequant_device(a: BenchDequantDeviceArgs) -> anyhow::Result<()> {
    use lora_null::model::Target;
    use lora_null::model::dequant::DeviceMatrix;
    use lora_null::model::linear::PackedWeight;
    let (m, choice) = super::run::load(&a.model)?;
    let matrices: Vec<&DeviceMatrix> = (0..m.model.num_layers())
        .flat_map(|l| Target::ALL.map(move |t| (l, t)))
        .filter_map(|(l, t)| m.model.linear(l, t))
        .filter_map(|l| match &l.base.packed {
            Some(PackedWeight::Device(d)) => Some(d.as_ref()),
            _ => None,
        })
        .collect();
    anyhow::ensure!(
        !matrices.is_empty(),
        "no matrix of this model lives on the device in its stored precision: use a quantised or 16-bit model with --base packed (or packed-device)"
    );
    let values: usize = matrices.iter().map(|d| d.dims().0 * d.dims().1).sum();
    let device = choice.device.clone();
    let pass = |kernel: bool| -> anyhow::Result<f64> {
        let t = Instant::now();
        for d in &matrices {
            drop(if kernel {
                d.dequantize()
            } else {
                d.dequantize_by_tensors()
            });
        }
        <burn::backend::Dispatch as burn::backend::Backend>::sync(device.as_dispatch())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut kernel, mut tensors) = (f64::INFINITY, f64::INFINITY);
    pass(true)?;
    pass(false)?;
    for _ in 0..a.repeats.max(1) {
        kernel = kernel.min(pass(true)?);
        tensors = tensors.min(pass(false)?);
    }
    println!(
        "{}",
        serde_json::json!({"bench": "dequant-device", "device": choice.description, "matrices": matrices.len(),
            "values": values, "kernel_seconds": kernel, "tensor_ops_seconds": tensors,
            "kernel_vs_tensor_ops": tensors / kernel})
    );
    if a.tokens == 0 {
        return Ok(());
    }
    // The products of a forward pass (x · Wᵀ) and of its input gradient (g · W), for `tokens`
    // rows, every matrix once: fused against dequantised-then-multiplied, alternating.
    let rows_of = |width: usize| {
        burn::tensor::Tensor::<2>::random([a.tokens, width], burn::tensor::Distribution::Default, &device)
    };
    let inputs: Vec<(burn::tensor::Tensor<2>, burn::tensor::Tensor<2>)> = matrices
        .iter()
        .map(|d| (rows_of(d.dims().1), rows_of(d.dims().0)))
        .collect();
    let products = |fused: bool, transpose: bool| -> anyhow::Result<f64> {
        let t = Instant::now();
        for (d, (x, g)) in matrices.iter().zip(&inputs) {
            let x = if transpose { g } else { x };
            let y = if fused {
                d.fused_product(x.clone(), transpose)
                    .ok_or_else(|| anyhow::anyhow!("the fused product does not run on this device"))?
            } else {
                let w = d.dequantize();
                x.clone().matmul(if transpose { w } else { w.transpose() })
            };
            drop(y);
        }
        <burn::backend::Dispatch as burn::backend::Backend>::sync(device.as_dispatch())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(t.elapsed().as_secs_f64())
    };
    for transpose in [false, true] {
        let (mut fused, mut split) = (f64::INFINITY, f64::INFINITY);
        products(true, transpose)?;
        products(false, transpose)?;
        for _ in 0..a.repeats.max(1) {
            fused = fused.min(products(true, transpose)?);
            split = split.min(products(false, transpose)?);
        }
        let flops = 2.0 * (a.tokens * values) as f64;
        println!(
            "{}",
            serde_json::json!({"bench": "dequant-product", "device": choice.description,
                "product": if transpose { "g · W (input gradient)" } else { "x · Wᵀ (forward)" },
                "tokens": a.tokens, "matrices": matrices.len(), "values": values,
                "fused_seconds": fused, "dequantise_then_matmul_seconds": split,
                "fused_gflops": flops / fused / 1e9, "split_gflops": flops / split / 1e9,
                "fused_vs_split": split / fused})
        );
    }
    Ok(())
}
