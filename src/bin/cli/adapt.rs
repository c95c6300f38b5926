//! `analyze` and `init`: calibration statistics, spectra and plots, adapter initialisation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use indicatif::{ProgressBar, ProgressStyle};
use lora_null::calib::{Normalization, SpectraReport};
use lora_null::engine::{CalibOptions, Calibration, EighCache, Inline, LoadedModel, STREAM_ABOVE_BYTES, Threads};
use lora_null::io::safetensors::SaveDtype;
use lora_null::lora::{InitMethod, LoraConfig, METHODS};
use lora_null::model::{Site, Target};
use lora_null::plot::{HeatmapMetric, heatmap, spectrum_figure};

use super::ModelArgs;
use super::files::{read_dataset, write_files_atomically};
use super::run::load;

/// Calibration options shared by `analyze`, `init` and `train`.
#[derive(Args, Clone)]
pub struct CalibArgs {
    /// Calibration text: .txt, .jsonl/.json ("text", instruction or "messages" records) or .csv.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration windows to draw (seeded, random offsets).
    #[arg(long, default_value_t = CalibOptions::default().samples)]
    pub samples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = CalibOptions::default().seq_len)]
    pub seq_len: usize,
    /// Seed of the window sampler (the reference uses 233).
    #[arg(long, default_value_t = CalibOptions::default().seed)]
    pub calib_seed: u64,
    /// Per-window normalisation of activations: signed-max (X/|max X|, as the reference) or none.
    #[arg(long, default_value = "signed-max")]
    pub normalize: Normalization,
    /// Calibrate and initialise block by block, each block's covariances freed once its adapters
    /// exist (same factors). Default: when all covariances at once would pass 1 GiB.
    #[arg(long)]
    pub by_block: Option<bool>,
}

impl CalibArgs {
    fn options(&self, targets: &[Target]) -> CalibOptions {
        CalibOptions {
            samples: self.samples,
            seq_len: self.seq_len,
            seed: self.calib_seed,
            normalization: self.normalize,
            targets: targets.to_vec(),
        }
    }
}

/// `--method`: the names and help lines of the method table.
fn method_parser() -> impl TypedValueParser<Value = InitMethod> {
    PossibleValuesParser::new(METHODS.iter().map(|m| {
        PossibleValue::new(m.name)
            .aliases(m.aliases.iter().copied())
            .help(m.help)
    }))
    .map(|name| {
        name.parse::<InitMethod>()
            .expect("invariant: a name from the method table")
    })
}

/// Adapter options shared by `init` and `train`.
#[derive(Args, Clone)]
pub struct LoraArgs {
    /// Initialisation method (`--help` lists them with what each does).
    #[arg(long, value_parser = method_parser())]
    pub method: InitMethod,
    /// LoRA rank r.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (scale alpha/r); defaults to r, i.e. scale 1 as in the LoRA-Null and PiSSA papers.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Use rsLoRA scaling alpha/√r.
    #[arg(long)]
    pub rslora: bool,
    /// Modules to adapt, comma-separated (on phi3, q/k/v name the fused qkv_proj and gate/up the
    /// fused gate_up_proj; qkv and gate_up name them directly).
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',', value_parser = Target::parse)]
    pub targets: Vec<Target>,
    /// Seed of the random initialisations (lora, gaussian).
    #[arg(long, default_value_t = LoraConfig::new(InitMethod::Lora, 1).seed)]
    pub init_seed: u64,
}

impl LoraArgs {
    /// The library's config: its defaults, with what was given.
    pub fn config(&self) -> LoraConfig {
        let mut cfg = LoraConfig::new(self.method, self.rank);
        if let Some(alpha) = self.alpha {
            cfg.alpha = alpha;
        }
        cfg.use_rslora = self.rslora;
        cfg.targets = self.targets.clone();
        cfg.seed = self.init_seed;
        cfg
    }
}

/// `analyze` options.
#[derive(Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    calib: CalibArgs,
    /// Rank r of the subspaces compared (the null space is the r smallest directions).
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Modules to analyse, comma-separated.
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',', value_parser = Target::parse)]
    targets: Vec<Target>,
    /// Output folder (spectra.json and plots/).
    #[arg(long)]
    out: PathBuf,
}

/// `init` options.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    calib: CalibArgs,
    #[command(flatten)]
    lora: LoraArgs,
    /// Precision of written tensors: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: SaveDtype,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn bar(msg: &str) -> ProgressBar {
    ProgressBar::new(0).with_message(msg.to_string()).with_style(
        ProgressStyle::with_template("{msg:12} {bar:30} {pos}/{len} [{elapsed} elapsed, ETA {eta}]")
            .expect("invariant: static template"),
    )
}

/// Runs calibration with a progress bar, if `--calib` was given.
pub fn calibrate(m: &LoadedModel, args: &CalibArgs, targets: &[Target]) -> anyhow::Result<Option<Calibration>> {
    let Some(path) = &args.calib else {
        return Ok(None);
    };
    let records = read_dataset(path)?;
    let opts = args.options(targets);
    let pb = bar("calibrating");
    let calib = pollster::block_on(m.calibrate(&records, &opts, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    }))
    .with_context(|| format!("calibration on {}", path.display()))?;
    pb.finish_and_clear();
    if let Some(note) = &calib.note {
        eprintln!("note: {note}");
    }
    eprintln!(
        "calibration: {} windows, {} tokens, normalisation {:?}",
        calib.covariances.windows, calib.covariances.tokens, calib.covariances.normalization
    );
    Ok(Some(calib))
}

/// `lora-null analyze`.
pub fn analyze(a: AnalyzeArgs) -> anyhow::Result<()> {
    if a.calib.calib.is_none() {
        anyhow::bail!("analyze needs calibration text: pass --calib FILE");
    }
    let start = Instant::now();
    let (m, _) = load(&a.model)?;
    let calib = calibrate(&m, &a.calib, &a.targets)?.expect("invariant: --calib checked above");
    let pb = bar("spectra");
    let mut eighs = EighCache::default();
    // The decompositions side by side, one per core.
    let threads = Threads::new();
    let report = pollster::block_on(
        m.analyze(&calib, &mut eighs, &a.targets, a.rank, &threads, &mut |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        }),
    )?;
    pb.finish_and_clear();
    let mut files = vec![("spectra.json".to_string(), serde_json::to_vec(&report)?)];
    files.extend(plots(&report));
    write_files_atomically(&a.out, &files)?;
    eprintln!(
        "wrote {}/spectra.json and {} plots in {:.1} s",
        a.out.display(),
        files.len() - 1,
        start.elapsed().as_secs_f64()
    );
    print_overview(&report);
    Ok(())
}

/// Per-layer, per-site spectrum charts and layer × module heatmaps (built by the library's
/// `plot::figures`, as the page's).
pub fn plots(report: &SpectraReport) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (i, layer) in report.layers.iter().enumerate() {
        for site in Site::ALL {
            if let Some(fig) = spectrum_figure(report, i, site) {
                files.push((
                    format!("plots/spectra/layer{:02}_{}.svg", layer.layer, site.name()),
                    fig.svg().into_bytes(),
                ));
            }
        }
    }
    for metric in HeatmapMetric::ALL {
        files.push((
            format!("plots/heatmap_{}.svg", metric.name()),
            heatmap(report, metric).svg().into_bytes(),
        ));
    }
    files
}

fn print_overview(report: &SpectraReport) {
    let mean = |f: &dyn Fn(&lora_null::calib::report::LayerSpectra) -> Vec<f64>| {
        let v: Vec<f64> = report.layers.iter().flat_map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let act = mean(&|l| l.sites.values().map(|s| s.summary.effective_rank).collect());
    let w = mean(&|l| l.modules.values().map(|s| s.summary.effective_rank).collect());
    let null_energy = mean(&|l| l.modules.values().map(|s| s.activation_energy_null).collect());
    let top = mean(&|l| l.modules.values().map(|s| s.activation_energy_top).collect());
    println!(
        "{}",
        serde_json::json!({
            "mean_activation_effective_rank": act,
            "mean_weight_effective_rank": w,
            "mean_activation_energy_null": null_energy,
            "mean_activation_energy_top": top,
            "rank": report.rank,
        })
    );
}

/// `lora-null init`.
pub fn init(a: InitArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let cfg = a.lora.config();
    cfg.check(a.calib.calib.is_some())
        .map_err(lora_null::engine::EngineError::from)?;
    let (mut m, _) = load(&a.model)?;
    let summary = calibrate_and_init(&mut m, &a.calib, &cfg, start)?;
    let files = pollster::block_on(m.export_init(a.dtype))?;
    write_files_atomically(&a.out, &files)?;
    write_files_atomically(&a.out, &[("summary.json".into(), serde_json::to_vec_pretty(&summary)?)])?;
    println!("{summary}");
    eprintln!(
        "wrote {0}/init_adapter (PEFT, rank {1}) and {0}/residual_model{2}",
        a.out.display(),
        cfg.rank,
        if cfg.method.changes_base() {
            " (W − s·B₀A₀: load the init adapter onto this residual model, not the original)"
        } else {
            " (unchanged base weights)"
        }
    );
    Ok(())
}

/// Calibrates (with `--calib`) and initialises the adapters, block by block when `--by-block`
/// says so or all covariances at once would pass [`STREAM_ABOVE_BYTES`]; returns a summary: time,
/// and (with calibration) the share of the calibration activations' energy the down projections
/// see.
pub fn calibrate_and_init(
    m: &mut LoadedModel,
    args: &CalibArgs,
    cfg: &LoraConfig,
    start: Instant,
) -> anyhow::Result<serde_json::Value> {
    let by_block = args.calib.is_some()
        && cfg.method.needs_calibration()
        && args
            .by_block
            .unwrap_or_else(|| m.covariance_bytes(&cfg.targets) > STREAM_ABOVE_BYTES);
    let energies = if by_block {
        let path = args.calib.as_ref().expect("invariant: by_block needs --calib");
        let records = read_dataset(path)?;
        let pb = bar("calibrating and initialising by block");
        let streamed = pollster::block_on(m.init_adapters_streaming(
            cfg.clone(),
            &records,
            &args.options(&cfg.targets),
            &Inline,
            &mut |d, t| {
                pb.set_length(t as u64);
                pb.set_position(d as u64);
            },
        ))
        .with_context(|| format!("calibration on {}", path.display()))?;
        pb.finish_and_clear();
        if let Some(note) = &streamed.note {
            eprintln!("note: {note}");
        }
        eprintln!(
            "calibration (block by block): {} windows, {} tokens, normalisation {:?}",
            streamed.windows, streamed.tokens, streamed.normalization
        );
        Some(streamed.input_energy)
    } else {
        let calib = calibrate(m, args, &cfg.targets)?;
        let pb = bar("initialising");
        pollster::block_on(m.init_adapters(
            cfg.clone(),
            calib.as_ref(),
            &mut EighCache::default(),
            &Inline,
            &mut |d, t| {
                pb.set_length(t as u64);
                pb.set_position(d as u64);
            },
        ))?;
        pb.finish_and_clear();
        calib.map(|c| m.adapter_input_energy(&c))
    };
    let mut v = serde_json::to_value(m.adapter_summary()).unwrap_or_default();
    v["seconds"] = start.elapsed().as_secs_f64().into();
    if let Some(energies) = energies {
        let mean = energies.values().sum::<f64>() / energies.len().max(1) as f64;
        v["mean_activation_energy_seen_by_A"] = mean.into();
        v["activation_energy_seen_by_A"] = energies
            .iter()
            .map(|((l, t), e)| (format!("layers.{l}.{}", t.module_name()), serde_json::Value::from(*e)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    Ok(v)
}
