//! The page: one column of panels following the flow (GPU → model and data → statistics and
//! spectra → training → forgetting check → export). Components only read signals and send
//! commands to the engine worker; all work is in `flows`, there.

use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use super::client::{self, run_task, send};
use super::protocol::{CalibrateOptions, Command, TrainOptions};
use super::state::Ui;
use crate::calib::SpectraReport;
use crate::lora::{InitMethod, METHODS};
use crate::model::arch::SITES;
use crate::model::memory::{MemoryPlan, TAB_BYTES, TrainSettings, gib};
use crate::model::{Site, Target};
use crate::plot::{HeatmapMetric, heatmap, line_svg, spectrum_figure};

/// The files of a file input's change event, as an array to send to the engine.
fn files_of(ev: &leptos::ev::Event) -> JsValue {
    let input: web_sys::HtmlInputElement = ev
        .target()
        .expect("invariant: a change event has a target")
        .unchecked_into();
    input
        .files()
        .map_or_else(|| js_sys::Array::new().into(), |list| js_sys::Array::from(&list).into())
}

const NONE: JsValue = JsValue::UNDEFINED;

fn num<T: std::str::FromStr>(s: &RwSignal<String>, default: T) -> T {
    s.get_untracked().trim().parse().unwrap_or(default)
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let ui = Ui::new();
    provide_context(ui);
    if let Err(e) = client::start(ui) {
        ui.error.set(Some(format!(
            "cannot start the engine worker: {e}; use a current Chrome, Edge, Firefox or Safari"
        )));
    }
    view! {
        <header>
            <h1>"LoRA-Null Studio"</h1>
            <p class="tagline">"Fine-tune on your GPU without forgetting: activation-aware LoRA initialisation, spectra, training and PEFT export, in one page."</p>
        </header>
        <StatusBar/>
        <GpuPanel/>
        <LoadPanel/>
        <CalibratePanel/>
        <TrainPanel/>
        <ForgettingPanel/>
        <ExportPanel/>
    }
}

/// Status line, progress and error (testids `status`, `error`).
#[component]
fn StatusBar() -> impl IntoView {
    let ui = expect_context::<Ui>();
    view! {
        <section class="status">
            <div class="status-row">
                <div data-testid="status" class="status-line">{move || ui.status.get()}</div>
                {move || ui.busy.get().then(|| view! {
                    <button data-testid="cancel-task" title="stop the running task at its next checkpoint"
                        on:click=move |_| send(&Command::Cancel)>"Cancel"</button>
                })}
            </div>
            {move || ui.progress.get().map(|(label, f)| view! {
                <div class="progress"><span>{label}</span><progress max="1" value=f></progress></div>
            })}
            {move || ui.error.get().map(|e| view! {
                <div data-testid="error" class="error" role="alert">
                    <strong>"Error: "</strong>{e}
                    <button on:click=move |_| ui.error.set(None)>"dismiss"</button>
                </div>
            })}
        </section>
    }
}

/// WebGPU detection and start.
#[component]
fn GpuPanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let has = crate::wasm::has_webgpu();
    view! {
        <section class="panel">
            <h2>"1 · GPU"</h2>
            {if has {
                view! { <p>"WebGPU is available in this browser."</p> }.into_any()
            } else {
                view! { <p class="warn">{crate::wasm::NO_WEBGPU}". "{crate::wasm::NO_WEBGPU_FIX}"."</p> }.into_any()
            }}
            <button data-testid="gpu-button" disabled=move || ui.busy.get() || !has
                on:click=move |_| run_task(ui, "starting WebGPU", Command::InitDevice { cpu: false }, NONE)>"Start WebGPU"</button>
            <button data-testid="cpu-button" disabled=move || ui.busy.get()
                on:click=move |_| run_task(ui, "starting the CPU backend", Command::InitDevice { cpu: true }, NONE)>"Use the CPU backend (slow)"</button>
            {move || ui.gpu.get().map(|g| view! { <p class="gpu">"Device: "{g}" "{ui.gpu_limits.get().unwrap_or_default()}</p> })}
        </section>
    }
}

/// Model and dataset inputs (testids `model-input`, `data-input`, `calib-input`).
#[component]
fn LoadPanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let on_model = move |ev: leptos::ev::Event| run_task(ui, "loading the model", Command::LoadModel, files_of(&ev));
    let on_data = move |calib: bool| {
        move |ev: leptos::ev::Event| run_task(ui, "reading the dataset", Command::SetDataset { calib }, files_of(&ev))
    };
    view! {
        <section class="panel">
            <h2>"2 · Model and data"</h2>
            <button data-testid="default-button" disabled=move || ui.busy.get()
                on:click=move |_| run_task(ui, "loading the default model and data", Command::LoadDefault, NONE)>
                "Load the default (SmolLM2-135M-Instruct + sample data)"</button>
            <div class="inputs">
                <label>"Model (.gguf, or a Hugging Face folder's config.json, tokenizer.json, *.safetensors): "
                    <input type="file" multiple data-testid="model-input" accept=".gguf,.json,.safetensors" on:change=on_model/></label>
                <label>"Fine-tuning data (.txt, .jsonl, .json, .csv): "
                    <input type="file" data-testid="data-input" accept=".txt,.jsonl,.json,.csv" on:change=on_data(false)/></label>
                <label>"Calibration text (optional; defaults to the fine-tuning data): "
                    <input type="file" data-testid="calib-input" accept=".txt,.jsonl,.json,.csv" on:change=on_data(true)/></label>
            </div>
            {move || ui.summary.get().map(|s| view! {
                <table class="summary" data-testid="model-summary">
                    <tr><th>"architecture"</th><td>{s.architecture.clone()}</td></tr>
                    <tr><th>"parameters"</th><td>{format!("{:.1} M", s.parameters as f64 / 1e6)}</td></tr>
                    <tr><th>"layers × hidden"</th><td>{format!("{} × {} (MLP {})", s.layers, s.hidden_size, s.intermediate_size)}</td></tr>
                    <tr><th>"heads (q / kv)"</th><td>{format!("{} / {}", s.heads.0, s.heads.1)}</td></tr>
                    <tr><th>"weights as held"</th><td>{format!("{:.0} MiB ({})", s.weight_bytes as f64 / 1048576.0,
                        if s.packed { "packed: stored precision, dequantised a layer at a time" } else { "f32" })}</td></tr>
                    <tr><th>"training LoRA r 16, batch 4 × 512"</th><td data-testid="memory-plan">{memory_plan_text(&s)}</td></tr>
                    <tr><th>"storage"</th><td>{format!("{:?} {:?}", s.format, s.storage)}</td></tr>
                </table>
            })}
            <p>{move || ui.data_info.get().unwrap_or_else(|| "no fine-tuning data yet".into())}" · "
               {move || ui.calib_info.get().unwrap_or_else(|| "no separate calibration text".into())}</p>
        </section>
    }
}

/// The summary's memory plan in words: the default run's total and its parts, and the largest run
/// that fits a tab.
fn memory_plan_text(s: &crate::model::ModelSummary) -> String {
    let p = &s.train_plan;
    let fits = match s.fits_tab {
        Some((b, t, plan)) => format!("; fits a 4 GiB tab up to batch {b} × {t} ({})", gib(plan.total)),
        None => "; no run fits a 4 GiB tab: use a smaller model or a more compressed file".into(),
    };
    format!(
        "about {}: weights {}, adapter and optimiser {}, activations {}{fits}",
        gib(p.total),
        gib(p.weights),
        gib(p.adapter),
        gib(p.activations)
    )
}

/// Calibration options and the spectra view (testids `calib-button`, `spectra-plot`).
#[component]
fn CalibratePanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let rank = RwSignal::new("16".to_string());
    let samples = RwSignal::new("16".to_string());
    let seq_len = RwSignal::new("128".to_string());
    let start = move |_| {
        let opts = CalibrateOptions {
            rank: num(&rank, 16),
            samples: num(&samples, 16),
            seq_len: num(&seq_len, 128),
            targets: Target::DEFAULT.to_vec(),
        };
        run_task(ui, "collecting statistics", Command::Calibrate(opts), NONE);
    };
    view! {
        <section class="panel">
            <h2>"3 · Activation statistics and spectra"</h2>
            <div class="form">
                <label>"rank r "<input size="4" bind:value=rank/></label>
                <label>"windows "<input size="4" bind:value=samples/></label>
                <label>"tokens per window "<input size="5" bind:value=seq_len/></label>
                <button data-testid="calib-button" disabled=move || ui.busy.get() on:click=start>"Collect statistics"</button>
            </div>
            {move || ui.spectra.get().map(|report| view! { <SpectraView report/> })}
        </section>
    }
}

/// Per-layer spectrum and layer × module heatmaps (the library's figures, as the CLI's files).
#[component]
fn SpectraView(report: SpectraReport) -> impl IntoView {
    let layer = RwSignal::new(0usize);
    let site = RwSignal::new(Site::AttnInput);
    let metric = RwSignal::new(HeatmapMetric::ALL[0]);
    let n_layers = report.layers.len();
    let report = StoredValue::new(report);
    let chart = move || {
        report.with_value(|r| {
            let index = layer.get().min(r.layers.len().saturating_sub(1));
            spectrum_figure(r, index, site.get())
                .map_or_else(|| "<p>no statistic for this site</p>".to_string(), |f| f.svg())
        })
    };
    let heat = move || report.with_value(|r| heatmap(r, metric.get()).svg());
    view! {
        <div class="spectra">
            <div class="form">
                <label>"layer "<input type="range" min="0" max=n_layers.saturating_sub(1)
                    prop:value=move || layer.get().to_string()
                    on:input=move |ev| layer.set(event_target_value(&ev).parse().unwrap_or(0))/>{move || layer.get()}</label>
                <select on:change=move |ev| site.set(Site::parse(&event_target_value(&ev)).unwrap_or(Site::AttnInput))>
                    {SITES.iter().map(|s| view! { <option value=s.name>{s.label}</option> }).collect_view()}
                </select>
                <select on:change=move |ev| metric.set(HeatmapMetric::parse(&event_target_value(&ev)).unwrap_or(HeatmapMetric::ALL[0]))>
                    {HeatmapMetric::ALL.iter().map(|m| view! { <option value=m.name()>{format!("heatmap: {}", m.title())}</option> }).collect_view()}
                </select>
            </div>
            <div class="plots">
                <div data-testid="spectra-plot" class="plot" inner_html=chart></div>
                <div data-testid="heatmap-plot" class="plot" inner_html=heat></div>
            </div>
        </div>
    }
}

/// Method, hyper-parameters, start/pause/cancel, live loss (testids `train-button`, `loss-plot`).
#[component]
fn TrainPanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let method = RwSignal::new("null".to_string());
    let rank = RwSignal::new("8".to_string());
    let lr = RwSignal::new("1e-3".to_string());
    let steps = RwSignal::new("20".to_string());
    let batch = RwSignal::new("2".to_string());
    let max_len = RwSignal::new("128".to_string());
    let blockwise = RwSignal::new("auto".to_string());
    // Tracked: the plan below follows every edit.
    let tracked = |s: &RwSignal<String>, default: usize| s.get().trim().parse().unwrap_or(default);
    let settings = move || TrainSettings {
        batch: tracked(&batch, 2),
        tokens: tracked(&max_len, 128),
        rank: tracked(&rank, 8),
        trains_down: method.get().parse().unwrap_or(InitMethod::Null).trains_down(),
        blockwise: match blockwise.get().as_str() {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        },
    };
    let use_settings = move |s: TrainSettings| {
        batch.set(s.batch.to_string());
        max_len.set(s.tokens.to_string());
        blockwise.set(if s.blockwise == Some(true) { "on" } else { "auto" }.to_string());
    };
    // A newly loaded model: settings over a tab's memory give way to the closest that fit.
    let lowered = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let Some(basis) = ui.summary.get().and_then(|s| s.plan_basis) else {
            return;
        };
        let asked = untrack(settings);
        if let Err(too_big) = basis.check(&asked, TAB_BYTES, "a browser tab has")
            && let Some((fit, _)) = too_big.proposal
        {
            use_settings(fit);
            lowered.set(Some(format!(
                "Lowered from batch {} × {} to fit a tab.",
                asked.batch, asked.tokens
            )));
        }
    });
    let prompt = RwSignal::new("What is the capital of France?".to_string());
    let start = move |_| {
        let opts = TrainOptions {
            method: method.get_untracked().parse().unwrap_or(InitMethod::Null),
            rank: num(&rank, 8),
            lr: num(&lr, 1e-3),
            steps: num(&steps, 20),
            batch: num(&batch, 2),
            max_len: num(&max_len, 128),
            targets: Target::DEFAULT.to_vec(),
            blockwise: settings().blockwise,
        };
        ui.paused.set(false);
        run_task(ui, "training", Command::Train(opts), NONE);
    };
    let generate = move |after: bool| {
        move |_| {
            let prompt = prompt.get_untracked();
            run_task(ui, "generating", Command::Generate { prompt, after }, NONE);
        }
    };
    let pause = move |_| {
        let now = !ui.paused.get_untracked();
        ui.paused.set(now);
        send(&Command::Pause(now));
    };
    view! {
        <section class="panel">
            <h2>"4 · Fine-tune"</h2>
            <div class="form">
                <label>"method "<select data-testid="method-select" on:change=move |ev| method.set(event_target_value(&ev))>
                    {METHODS.iter().map(|m| view! {
                        <option value=m.name title=m.help selected=m.method == InitMethod::Null>{m.label}</option>
                    }).collect_view()}
                </select></label>
                <label>"rank "<input size="3" bind:value=rank/></label>
                <label>"lr "<input size="6" bind:value=lr/></label>
                <label>"steps "<input size="4" bind:value=steps/></label>
                <label>"batch "<input size="3" bind:value=batch/></label>
                <label>"max length "<input size="4" bind:value=max_len/></label>
                <label title="block by block: each block's graph is rebuilt in the backward pass (slower, far less memory)">
                    "block by block "<select data-testid="blockwise-select" on:change=move |ev| blockwise.set(event_target_value(&ev))
                        prop:value=move || blockwise.get()>
                    <option value="auto">"auto"</option><option value="on">"on"</option><option value="off">"off"</option>
                </select></label>
                <button data-testid="train-button" disabled=move || ui.busy.get() on:click=start>"Train"</button>
                <button data-testid="pause-button" on:click=pause>
                    {move || if ui.paused.get() { "Resume" } else { "Pause" }}</button>
                <button data-testid="cancel-button" on:click=move |_| send(&Command::Cancel)>"Cancel"</button>
            </div>
            {move || ui.summary.get().and_then(|s| s.plan_basis).map(|basis| {
                let asked = settings();
                let plan = basis.plan(&asked);
                let fit = basis.propose(&asked, TAB_BYTES).filter(|(s, _)| *s != asked);
                view! {
                    <p class="plan" data-testid="train-plan">{train_plan_text(&plan, fit.is_some())}
                        {fit.map(|(s, p)| view! {
                            " "<button data-testid="fit-button" on:click=move |_| use_settings(s)>
                                {format!("Use batch {} × {}{} ({})", s.batch, s.tokens,
                                    if s.blockwise == Some(true) { ", block by block" } else { "" }, gib(p.total))}</button>
                        })}
                        " "{lowered.get()}</p>
                }
            })}
            <div class="plots">
                <div data-testid="loss-plot" class="plot"
                    inner_html=move || line_svg("training loss", &ui.losses.get().iter().map(|(s, l)| (*s as f64, *l)).collect::<Vec<_>>(), "loss per token")></div>
                <div class="metrics">{move || ui.metrics.get().map(|m| format!(
                    "step {}/{} · loss {:.4} · lr {:.2e} · grad norm {:.3} · {:.0} tokens/s · elapsed {:.0} s · ETA {:.0} s",
                    m.step, m.total_steps, m.loss, m.lr, m.grad_norm, m.tokens_per_second, m.elapsed_seconds, m.eta_seconds))}</div>
            </div>
            <div class="generate">
                <label>"prompt "<input size="50" bind:value=prompt/></label>
                <button disabled=move || ui.busy.get() on:click=generate(false)>"Generate (before)"</button>
                <button disabled=move || ui.busy.get() on:click=generate(true)>"Generate (after)"</button>
                <div class="pair"><pre data-testid="before">{move || ui.before.get()}</pre><pre data-testid="after">{move || ui.after.get()}</pre></div>
            </div>
        </section>
    }
}

/// A training run's memory plan in words, against a tab's memory.
fn train_plan_text(p: &MemoryPlan, fit: bool) -> String {
    format!(
        "this run: about {} of the {} a tab has (weights {}, adapter and optimiser {}, activations {}){}",
        gib(p.total),
        gib(TAB_BYTES),
        gib(p.weights),
        gib(p.adapter),
        gib(p.activations),
        match (p.total > TAB_BYTES, fit) {
            (false, _) => "",
            (true, true) => " — too much for a tab on the CPU backend; settings that fit:",
            (true, false) => " — too much for a tab on the CPU backend at any batch and length",
        }
    )
}

/// Built-in knowledge probe before and after training.
#[component]
fn ForgettingPanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let questions = RwSignal::new(40usize);
    let show = |r: Option<(crate::eval::probe::ProbeScore, f64)>| {
        r.map_or_else(
            || "—".to_string(),
            |(s, p)| {
                format!(
                    "exact match {:.1}% · contains {:.1}% (n = {}) · prose perplexity {:.2}",
                    100.0 * s.exact_match,
                    100.0 * s.contains,
                    s.n,
                    p
                )
            },
        )
    };
    view! {
        <section class="panel">
            <h2>"5 · Forgetting check"</h2>
            <p>"World capitals the model answers greedily (through its chat template when it has one, else \"Question: … Answer:\"), and perplexity on encyclopedic prose."</p>
            <label>"questions "<input type="number" min="1" max="40" data-testid="probe-questions"
                prop:value=move || questions.get().to_string()
                on:change=move |ev| questions.set(event_target_value(&ev).parse().unwrap_or(40))/></label>
            <button data-testid="probe-before" disabled=move || ui.busy.get()
                on:click=move |_| { let n = questions.get_untracked(); run_task(ui, "probing", Command::Forgetting { after: false, questions: n }, NONE) }>"Check before training"</button>
            <button data-testid="probe-after" disabled=move || ui.busy.get()
                on:click=move |_| { let n = questions.get_untracked(); run_task(ui, "probing", Command::Forgetting { after: true, questions: n }, NONE) }>"Check after training"</button>
            <table class="summary">
                <tr><th>"before"</th><td data-testid="probe-before-score">{move || show(ui.probe_before.get())}</td></tr>
                <tr><th>"after"</th><td data-testid="probe-after-score">{move || show(ui.probe_after.get())}</td></tr>
            </table>
        </section>
    }
}

/// Adapter download (testid `export-button`).
#[component]
fn ExportPanel() -> impl IntoView {
    let ui = expect_context::<Ui>();
    let merged = RwSignal::new(false);
    let gguf = RwSignal::new(true);
    let gguf_merged = RwSignal::new(String::new());
    let from_gguf = move || ui.summary.get().is_some_and(|s| s.format == crate::model::Format::Gguf);
    view! {
        <section class="panel">
            <h2>"6 · Export"</h2>
            <p>"adapter_model.safetensors + adapter_config.json load with PeftModel.from_pretrained(original_base, dir). \
               Methods that change the base at initialisation (PiSSA, MiLoRA, OLoRA, CorDA, LoRA-Null v1) are exported at rank 2r: \
               [A; A₀] and [B, −B₀] give exactly the trained model on the original weights."</p>
            <p>"adapter.gguf is the same adapter for llama.cpp (llama-cli -m base.gguf --lora adapter.gguf) and Ollama (ADAPTER in a Modelfile)."</p>
            <label><input type="checkbox" data-testid="export-gguf" prop:checked=move || gguf.get()
                on:change=move |ev| gguf.set(event_target_checked(&ev))/>" also adapter.gguf (llama.cpp, Ollama)"</label>
            <label><input type="checkbox" on:change=move |ev| merged.set(event_target_checked(&ev))/>" also the merged model (f16)"</label>
            {move || from_gguf().then(|| view! {
                <label>" merged GGUF for llama.cpp / Ollama: "
                    <select data-testid="export-gguf-merged" on:change=move |ev| gguf_merged.set(event_target_value(&ev))>
                        <option value="" selected>"none"</option>
                        <option value="q4_k_m">"q4_k_m"</option>
                        <option value="q8_0">"q8_0"</option>
                        <option value="f16">"f16"</option>
                    </select></label>
            })}
            <button data-testid="export-button" disabled=move || ui.busy.get()
                on:click=move |_| {
                    let (m, g) = (merged.get_untracked(), gguf.get_untracked());
                    let q = Some(gguf_merged.get_untracked()).filter(|q| !q.is_empty());
                    run_task(ui, "exporting", Command::Export { merged: m, gguf: g, gguf_merged: q }, NONE)
                }>"Download the adapter"</button>
            <ul>{move || ui.exported.get().into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
        </section>
    }
}
