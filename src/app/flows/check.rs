//! Looking at the model: generation, the forgetting check, and the export downloads.

use super::{DEFAULT_PROBE, DEFAULT_PROSE};
use crate::app::browser::fetch_bytes;
use crate::app::engine_worker::{emit, emit_with, progress, status};
use crate::app::protocol::Event;
use crate::app::session;
use crate::app::words::page_error;
use crate::eval::GenerateOptions;
use crate::io::safetensors::SaveDtype;

/// Generates from a prompt into the "before" or "after" box, streaming the text.
pub async fn generate(prompt: String, after: bool) -> Result<(), String> {
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let opts = GenerateOptions {
        max_new_tokens: 48,
        ..GenerateOptions::default()
    };
    let chat = model.tokenizer.chat_template.is_some();
    let show = |text: &str| {
        emit(&Event::Generated {
            after,
            text: text.to_string(),
        })
    };
    let r = model.generate_text(&prompt, chat, &opts, &mut |t| show(t)).await;
    session::with(|s| s.model = Some(model));
    show(&r.map_err(|e| page_error(&e))?);
    status("generated");
    Ok(())
}

/// Offers named bytes as a download on the page (the buffer moves, no copy).
fn offer(name: &str, bytes: &[u8]) {
    let array = js_sys::Uint8Array::from(bytes);
    emit_with(&Event::Download(name.to_string()), &array, Some(&array.buffer()));
}

/// Downloads the PEFT adapter (and, if asked, the merged model, the adapter GGUF and the merged
/// GGUF with its Ollama Modelfile).
pub async fn export(merged: bool, gguf: bool, gguf_merged: Option<String>) -> Result<(), String> {
    let quant = gguf_merged
        .map(|q| q.parse::<crate::lora::gguf_merged::MergedQuant>())
        .transpose()?;
    // The base's files (a copy), only when a merged GGUF is asked for.
    let source = quant.and_then(|_| session::with(|s| s.files.clone()));
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let result = async {
        let (files, doubled) = model.export_peft(SaveDtype::F32).await.map_err(|e| page_error(&e))?;
        let mut all = files;
        if gguf {
            let (bytes, _) = model.export_gguf_adapter().await.map_err(|e| page_error(&e))?;
            all.push(("adapter.gguf".into(), bytes));
        }
        if let (Some(quant), Some(source)) = (quant, &source) {
            let bytes = model
                .export_gguf_merged(source, quant)
                .await
                .map_err(|e| page_error(&e))?;
            let name = "model-lora-null.gguf";
            all.push((
                "Modelfile".into(),
                crate::lora::gguf_merged::modelfile_merged(name).into_bytes(),
            ));
            all.push((name.into(), bytes));
        }
        if merged {
            for (name, bytes) in model
                .hf_model_files(true, SaveDtype::F16)
                .await
                .map_err(|e| page_error(&e))?
            {
                all.push((format!("merged-{name}"), bytes));
            }
        }
        // Everything is built before anything is offered: an export is whole or not at all.
        for (name, bytes) in &all {
            offer(name, bytes);
        }
        Ok::<_, String>((all.into_iter().map(|(n, _)| n).collect(), doubled))
    }
    .await;
    session::with(|s| s.model = Some(model));
    let (names, doubled) = result?;
    emit(&Event::Exported(names));
    status(if doubled {
        "adapter exported at rank 2r (this method changed the base; the export applies to the ORIGINAL model)"
    } else {
        "adapter exported"
    });
    Ok(())
}

/// Runs the first `questions` items of the built-in knowledge probe and the prose perplexity,
/// into the "before" or "after" slot.
pub async fn forgetting(after: bool, questions: usize) -> Result<(), String> {
    if session::with(|s| s.probe.is_none()) {
        let probe = fetch_bytes(DEFAULT_PROBE).await?;
        let prose = fetch_bytes(DEFAULT_PROSE).await?;
        let items = crate::eval::probe::parse_probe(DEFAULT_PROBE, &String::from_utf8_lossy(&probe))
            .map_err(|e| e.to_string())?;
        session::with(|s| s.probe = Some((items, String::from_utf8_lossy(&prose).to_string())));
    }
    let (mut items, prose) = session::with(|s| s.probe.clone()).expect("invariant: set above");
    items.truncate(questions.max(1));
    let model = session::with(|s| s.model.take()).ok_or("load a model first")?;
    let result = async {
        // Instruction-tuned models answer through their chat template (SmolLM2-Instruct emits
        // end-of-text at once after a plain "Question: … Answer:" prompt).
        let chat = model.tokenizer.chat_template.is_some();
        let (score, _) = model
            .probe(&items, chat, &mut |d, t| {
                progress("knowledge probe", d as f64 / t as f64)
            })
            .await
            .map_err(|e| page_error(&e))?;
        let ppl = model
            .perplexity_text(&prose, Some(1024), 256, &mut |_, _| {})
            .await
            .map_err(|e| page_error(&e))?;
        Ok::<_, String>((score, ppl.perplexity))
    }
    .await;
    session::with(|s| s.model = Some(model));
    let (score, perplexity) = result?;
    emit(&Event::Probe {
        after,
        score,
        perplexity,
    });
    status("forgetting check done");
    Ok(())
}
