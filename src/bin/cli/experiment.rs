//! `lora-null experiment --config FILE`: the same fine-tuning for several initialisations and
//! seeds, each scored on the task (held-out items), the knowledge probe and knowledge-prose
//! perplexity, before and after, plus why: how much each trained ΔW disturbs the calibration
//! (knowledge) activations. Results append to OUT/results.jsonl as runs finish, so an
//! interrupted experiment resumes where it stopped; OUT/table.md is rewritten after each run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use lora_null::engine::{CalibOptions, Calibration, Control, EighCache, Inline, LoadedModel, TrainHooks};
use lora_null::eval::GenerateOptions;
use lora_null::eval::probe::{ProbeItem, parse_probe};
use lora_null::io::dataset::{Record, alpaca_prompt};
use lora_null::lora::{InitMethod, LoraConfig};
use lora_null::model::Target;
use lora_null::train::{StepMetrics, TrainConfig};
use serde::{Deserialize, Serialize};

use super::adapt::bar;
use super::files::{read_dataset, read_model_files, read_text};

/// `experiment` options.
#[derive(Args)]
pub struct ExperimentArgs {
    /// Experiment config (JSON); see experiments/forgetting.json.
    #[arg(long)]
    config: PathBuf,
}

/// The experiment, as data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// Model file or folder.
    pub model: PathBuf,
    /// Fine-tuning data (instruction records).
    pub train: PathBuf,
    /// Held-out task items (instruction records; output = the exact answer).
    pub test: PathBuf,
    /// Score at most this many test items (the first N).
    pub test_limit: usize,
    /// Knowledge probe (question/answers JSON lines).
    pub probe: PathBuf,
    /// Score at most this many probe items (the first N); all when absent.
    #[serde(default)]
    pub probe_limit: Option<usize>,
    /// Ask the probe through the chat template.
    pub chat: bool,
    /// Knowledge prose for perplexity.
    pub prose: PathBuf,
    /// Tokens of prose to score.
    pub prose_tokens: usize,
    /// Calibration text (knowledge kind).
    pub calib: PathBuf,
    /// Calibration windows.
    pub calib_samples: usize,
    /// Tokens per calibration window.
    pub calib_seq_len: usize,
    /// Methods, in order.
    pub methods: Vec<InitMethod>,
    /// Seeds every method runs with.
    pub seeds: Vec<u64>,
    /// Extra seeds for some methods (the spread).
    #[serde(default)]
    pub extra_seeds: BTreeMap<String, Vec<u64>>,
    /// Rank.
    pub rank: usize,
    /// Alpha.
    pub alpha: f64,
    /// Adapted modules.
    pub targets: Vec<Target>,
    /// Optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Truncation length.
    pub max_len: usize,
    /// Share of the training examples held out for validation (the training default when absent).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Output folder.
    pub out: PathBuf,
}

fn default_val_fraction() -> f64 {
    TrainConfig::default().val_fraction
}

/// Scores of one model state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scores {
    task_exact: f64,
    /// Share of the answer's `key=value` fields (split at ';') that the generation got right.
    #[serde(default)]
    task_fields: f64,
    probe_exact: f64,
    probe_contains: f64,
    prose_ppl: f64,
}

/// One finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    method: String,
    seed: u64,
    after: Scores,
    final_loss: f64,
    train_seconds: f64,
    total_seconds: f64,
    /// Mean over modules of tr(ΔW C ΔWᵀ)/tr(W C Wᵀ) on the calibration covariance.
    disturbance: f64,
    /// Mean over modules of ‖ΔW P_top‖²/‖ΔW‖² for the calibration's top-r directions.
    top_share: f64,
}

fn test_items(path: &Path, limit: usize) -> anyhow::Result<Vec<(String, String)>> {
    let items: Vec<(String, String)> = read_dataset(path)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Instruction {
                instruction,
                input,
                output,
            } => Some((alpaca_prompt(&instruction, &input), output)),
            _ => None,
        })
        .take(limit)
        .collect();
    anyhow::ensure!(!items.is_empty(), "{}: no instruction records to score", path.display());
    Ok(items)
}

/// The share of `want`'s `;`-separated fields that appear, exactly, among `got`'s fields.
fn field_share(got: &str, want: &str) -> f64 {
    let got: Vec<&str> = got.lines().next().unwrap_or("").split(';').map(str::trim).collect();
    let want: Vec<&str> = want.split(';').map(str::trim).filter(|f| !f.is_empty()).collect();
    if want.is_empty() {
        return 0.0;
    }
    want.iter().filter(|w| got.contains(w)).count() as f64 / want.len() as f64
}

struct Bench {
    cfg: ExperimentConfig,
    tests: Vec<(String, String)>,
    probe: Vec<ProbeItem>,
    prose: String,
}

impl Bench {
    fn score(&self, m: &LoadedModel) -> anyhow::Result<Scores> {
        let pb = bar("task");
        pb.set_length(self.tests.len() as u64);
        let opts = GenerateOptions {
            max_new_tokens: 48,
            ..GenerateOptions::default()
        };
        let (mut hits, mut fields) = (0, 0.0);
        for (i, (prompt, want)) in self.tests.iter().enumerate() {
            let got = pollster::block_on(m.generate_text(prompt, false, &opts, &mut |_| {}))?;
            hits += (got.trim() == want.trim()) as usize;
            fields += field_share(&got, want);
            pb.set_position(i as u64 + 1);
        }
        pb.finish_and_clear();
        let pb = bar("probe");
        let (probe, _) = pollster::block_on(m.probe(&self.probe, self.cfg.chat, &mut |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64)
        }))?;
        pb.finish_and_clear();
        let ppl = pollster::block_on(m.perplexity_text(&self.prose, Some(self.cfg.prose_tokens), 512, &mut |_, _| {}))?;
        Ok(Scores {
            task_exact: hits as f64 / self.tests.len() as f64,
            task_fields: fields / self.tests.len() as f64,
            probe_exact: probe.exact_match,
            probe_contains: probe.contains,
            prose_ppl: ppl.perplexity,
        })
    }
}

/// `lora-null experiment`.
pub fn experiment(a: ExperimentArgs) -> anyhow::Result<()> {
    let cfg: ExperimentConfig = serde_json::from_str(&read_text(&a.config)?)
        .with_context(|| format!("{} is not a valid experiment config", a.config.display()))?;
    std::fs::create_dir_all(&cfg.out)?;
    let device = lora_null::device::DeviceChoice::cpu().device;
    let files = read_model_files(&cfg.model)?;
    let bench = Bench {
        tests: test_items(&cfg.test, cfg.test_limit)?,
        probe: {
            let mut items = parse_probe(&cfg.probe.display().to_string(), &read_text(&cfg.probe)?)?;
            items.truncate(cfg.probe_limit.unwrap_or(usize::MAX));
            items
        },
        prose: read_text(&cfg.prose)?,
        cfg: cfg.clone(),
    };
    let records = read_dataset(&cfg.train)?;
    let base_path = cfg.out.join("baseline.json");
    let baseline: Scores = match std::fs::read(&base_path) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => {
            eprintln!("scoring the base model");
            let m = LoadedModel::load(&files, &device)?;
            let s = bench.score(&m)?;
            std::fs::write(&base_path, serde_json::to_vec_pretty(&s)?)?;
            s
        }
    };
    eprintln!("base: {baseline:?}");
    let calib = {
        let m = LoadedModel::load(&files, &device)?;
        let opts = CalibOptions {
            samples: cfg.calib_samples,
            seq_len: cfg.calib_seq_len,
            targets: cfg.targets.clone(),
            ..CalibOptions::default()
        };
        eprintln!("calibrating on {}", cfg.calib.display());
        pollster::block_on(m.calibrate(&read_dataset(&cfg.calib)?, &opts, &mut |_, _| {}))?
    };
    let mut eighs = EighCache::default();
    let results_path = cfg.out.join("results.jsonl");
    let mut done: Vec<RunResult> = read_results(&results_path);
    let mut runs: Vec<(InitMethod, u64)> = Vec::new();
    for &m in &cfg.methods {
        for &s in cfg
            .seeds
            .iter()
            .chain(cfg.extra_seeds.get(m.name()).into_iter().flatten())
        {
            runs.push((m, s));
        }
    }
    for (method, seed) in runs {
        if done.iter().any(|r| r.method == method.name() && r.seed == seed) {
            continue;
        }
        eprintln!("run: {} seed {seed}", method.name());
        let r = run(&bench, &files, &device, &records, &calib, &mut eighs, method, seed)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&results_path)?;
        writeln!(f, "{}", serde_json::to_string(&r)?)?;
        eprintln!(
            "done: {} seed {seed} in {:.0} s: {:?}",
            r.method, r.total_seconds, r.after
        );
        done.push(r);
        std::fs::write(cfg.out.join("table.md"), table(&cfg, &baseline, &done))?;
    }
    let t = table(&cfg, &baseline, &done);
    std::fs::write(cfg.out.join("table.md"), &t)?;
    println!("{t}");
    Ok(())
}

fn read_results(path: &Path) -> Vec<RunResult> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// A progress bar over the steps, and when the first step started.
struct RunHooks {
    bar: ProgressBar,
    started: Option<Instant>,
}

impl TrainHooks for RunHooks {
    fn on_step(&mut self, m: &StepMetrics) {
        self.bar.set_length(m.total_steps as u64);
        self.bar.set_position(m.step as u64);
        self.bar.set_message(format!("loss {:.3}", m.loss));
    }

    fn control(&mut self) -> Control {
        self.started.get_or_insert_with(Instant::now);
        Control::Run
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    bench: &Bench,
    files: &lora_null::io::ModelFiles,
    device: &burn::tensor::Device,
    records: &[Record],
    calib: &Calibration,
    eighs: &mut EighCache,
    method: InitMethod,
    seed: u64,
) -> anyhow::Result<RunResult> {
    let cfg = &bench.cfg;
    let start = Instant::now();
    let mut m = LoadedModel::load(files, device)?;
    let mut lora = LoraConfig::new(method, cfg.rank);
    lora.alpha = cfg.alpha;
    lora.targets = cfg.targets.clone();
    lora.seed = seed;
    let tc = TrainConfig {
        lr: cfg.lr,
        steps: Some(cfg.steps),
        batch: cfg.batch,
        max_len: cfg.max_len,
        val_fraction: cfg.val_fraction,
        seed,
        ..TrainConfig::default()
    };
    let mut hooks = RunHooks {
        bar: bar("training"),
        started: None,
    };
    let report = pollster::block_on(m.fine_tune(records, lora, &tc, Some(calib), eighs, &Inline, &mut hooks))?;
    hooks.bar.finish_and_clear();
    let train_seconds = hooks.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let after = bench.score(&m)?;
    let update = pollster::block_on(m.update_metrics(calib, eighs, cfg.rank, &Inline))?;
    Ok(RunResult {
        method: method.name().to_string(),
        seed,
        after,
        final_loss: report.last.map_or(f64::NAN, |s| s.loss),
        train_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        disturbance: update.disturbance,
        top_share: update.top_share,
    })
}

fn table(cfg: &ExperimentConfig, base: &Scores, runs: &[RunResult]) -> String {
    let mut t = format!(
        "Base model: task {:.1}% exact / {:.1}% fields, probe exact {:.1}% / contains {:.1}%, prose perplexity {:.3}\n\n\
         | method | seed | task exact % | task fields % | probe contains % (Δ) | probe exact % (Δ) | prose ppl (Δ) | final loss | ΔW disturbance on knowledge activations | ΔW share in top-{} directions | train s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        100.0 * base.task_exact,
        100.0 * base.task_fields,
        100.0 * base.probe_exact,
        100.0 * base.probe_contains,
        base.prose_ppl,
        cfg.rank
    );
    for r in runs {
        let a = &r.after;
        t.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} ({:+.1}) | {:.1} ({:+.1}) | {:.3} ({:+.3}) | {:.3} | {:.2e} | {:.3} | {:.0} |\n",
            r.method,
            r.seed,
            100.0 * a.task_exact,
            100.0 * a.task_fields,
            100.0 * a.probe_contains,
            100.0 * (a.probe_contains - base.probe_contains),
            100.0 * a.probe_exact,
            100.0 * (a.probe_exact - base.probe_exact),
            a.prose_ppl,
            a.prose_ppl - base.prose_ppl,
            r.final_loss,
            r.disturbance,
            r.top_share,
            r.train_seconds
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::field_share;

    #[test]
    fn field_share_counts_exact_fields_on_the_first_line() {
        let want = "area=580,367 sq km; coastline=536 km; internet=.ke";
        assert_eq!(field_share(want, want), 1.0);
        assert!((field_share("area=580,367 sq km;coastline=1 km; internet=.ke\nmore", want) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(field_share("", want), 0.0);
        assert_eq!(field_share("x\narea=580,367 sq km", want), 0.0);
    }
}
