//! Loading a model: parse the files (`io`), check the model against the device's limits, then
//! build it block by block (`model`), reporting progress, and wrap its layers so adapters can
//! attach (`lora`). The CLI, the page's worker and the tests all load through here.

use burn::tensor::Device;

use super::{EngineError, LoadedModel};
use crate::device::DeviceChoice;
use crate::io::{Checkpoint, ModelFiles};
use crate::model::llama::VOCAB_CHUNK;
use crate::model::memory::{MemoryPlan, PlanBasis, RunShape, TAB_BYTES, largest_fitting};
use crate::model::{ModelBuilder, ModelConfig, ModelSummary, Target, VarBuilder};

/// What a load reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadProgress {
    /// Something the user should know before the upload (e.g. the memory it will take).
    Note(String),
    /// Blocks uploaded so far, and in all.
    Blocks(usize, usize),
}

/// Above this many bytes of f32 weights the load warns that smaller GPUs may not hold the model.
const LARGE_MODEL_BYTES: u64 = 2 << 30;

/// Above this many bytes of f32 weights, [`BaseStorage::Auto`] keeps the base packed.
const PACK_ABOVE_BYTES: u64 = 1 << 30;

/// How the frozen base weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseStorage {
    /// Packed when the model would take more than 1 GiB as f32, else f32.
    #[default]
    Auto,
    /// Every weight decoded to f32 once, at load: fastest, 4 bytes per parameter.
    F32,
    /// Quantised and 16-bit matrices (GGUF blocks, F16/BF16 GGUF or safetensors) stay as stored
    /// and are decoded when their layer runs (f32 ones are kept as they are); training then
    /// checkpoints per block. On a GPU they live there and are dequantised there; on the CPU
    /// backend they are decoded on the host.
    Packed,
    /// [`BaseStorage::Packed`], in the device layout even on the CPU backend (to test and
    /// measure the GPU path's operations there).
    PackedDevice,
}

impl std::str::FromStr for BaseStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "packed" => Ok(Self::Packed),
            "packed-device" => Ok(Self::PackedDevice),
            other => Err(format!(
                "unknown base storage `{other}`; use auto, f32, packed or packed-device"
            )),
        }
    }
}

impl BaseStorage {
    /// Whether a model of this configuration is loaded packed.
    pub fn packs(self, c: &ModelConfig) -> bool {
        match self {
            Self::F32 => false,
            Self::Packed | Self::PackedDevice => true,
            Self::Auto => c.num_parameters() as u64 * 4 > PACK_ABOVE_BYTES,
        }
    }
}

/// Whether the token embedding may stay packed on the host: its lookup reads the ids back
/// synchronously, which natively always works and in the browser never (not even on the CPU
/// backend: wasm has no blocking wait), so there the table takes the device layout (on the CPU
/// backend too) and its lookup selects rows there.
fn lookups_pack() -> bool {
    !cfg!(target_arch = "wasm32")
}

/// Refuses a model whose largest tensor exceeds the adapter's storage-binding limit (before
/// anything is uploaded), and notes a large total. A packed base never holds its tables in f32:
/// the largest tensors are then a decoded MLP matrix, a vocabulary piece of the head, and the
/// stored table (at most 8 bits per code on the device).
fn check_fits(
    c: &ModelConfig,
    choice: &DeviceChoice,
    packed: bool,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<(), EngineError> {
    // Phi-3's fused gate_up_proj holds both MLP inputs' rows in one tensor.
    let mlp_rows = if c.model_type.fuses_projections() {
        2 * c.intermediate_size
    } else {
        c.intermediate_size
    };
    let (vocab, hidden) = (c.vocab_size as u64, c.hidden_size as u64);
    let mlp = mlp_rows as u64 * hidden * 4;
    let biggest = if packed {
        mlp.max(vocab * hidden).max(vocab.min(VOCAB_CHUNK as u64) * hidden * 4)
    } else {
        mlp.max(vocab * hidden * 4)
    };
    if let Some(limit) = choice
        .adapter
        .as_ref()
        .map(|a| a.max_storage_buffer_binding_size)
        .filter(|&l| biggest > l)
    {
        return Err(EngineError::TooLarge {
            needed_mib: biggest >> 20,
            limit_mib: limit >> 20,
        });
    }
    let total = c.num_parameters() as u64 * 4;
    if choice.adapter.is_some() && !packed && total > LARGE_MODEL_BYTES {
        progress(LoadProgress::Note(format!(
            "this model needs {:.1} GiB of GPU memory in f32 (plus activations); loading may fail on smaller GPUs",
            total as f64 / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

impl LoadedModel {
    /// Parses the files and builds the model on `device` in one go.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, EngineError> {
        Self::load_as(files, device, BaseStorage::Auto)
    }

    /// [`Self::load`] with the base weights held as `base` says.
    pub fn load_as(files: &ModelFiles, device: &Device, base: BaseStorage) -> Result<Self, EngineError> {
        let ckpt = Checkpoint::parse(files)?;
        let weights = ckpt.weights()?;
        let vb = VarBuilder::new(weights.source(), device, ckpt.config.model_type.model_type())
            .with_packing(base.packs(&ckpt.config))
            .with_packs_on_device(base == BaseStorage::PackedDevice)
            .with_packed_lookups(lookups_pack());
        let model = ModelBuilder::new(vb, &ckpt.config, weights.rope_freq_factors())
            .finish()
            .map_err(crate::io::LoadError::from)?;
        drop(weights);
        Ok(Self::assemble(ckpt.into_parts(), files, model))
    }

    /// [`Self::load`] for the chosen device: refuses models over its limits before uploading,
    /// reports progress between blocks and, in the browser, gives the event loop a turn there.
    pub async fn load_with_progress(
        files: &ModelFiles,
        choice: &DeviceChoice,
        base: BaseStorage,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, EngineError> {
        let ckpt = Checkpoint::parse(files)?;
        check_fits(&ckpt.config, choice, base.packs(&ckpt.config), progress)?;
        let weights = ckpt.weights()?;
        let vb = VarBuilder::new(weights.source(), &choice.device, ckpt.config.model_type.model_type())
            .with_packing(base.packs(&ckpt.config))
            .with_packs_on_device(base == BaseStorage::PackedDevice)
            .with_packed_lookups(lookups_pack());
        let mut builder = ModelBuilder::new(vb, &ckpt.config, weights.rope_freq_factors());
        loop {
            let (done, total) = builder.progress();
            progress(LoadProgress::Blocks(done, total));
            crate::device::yield_now().await;
            if !builder.next_layer().map_err(crate::io::LoadError::from)? {
                break;
            }
        }
        let model = builder.finish().map_err(crate::io::LoadError::from)?;
        drop(weights);
        Ok(Self::assemble(ckpt.into_parts(), files, model))
    }

    fn assemble(
        parts: crate::io::checkpoint::CheckpointParts,
        files: &ModelFiles,
        model: crate::model::LlamaForCausalLM,
    ) -> Self {
        Self {
            config: parts.config,
            tokenizer: parts.tokenizer,
            model: crate::lora::linear::wrap(model),
            format: parts.format,
            storage: parts.storage,
            base_name: files.base_name(),
            adapter: None,
        }
    }

    /// Bytes the weight matrices hold as loaded: packed ones at their stored size, the rest in
    /// f32; a dense tied output layer counts as the transposed copy it is (norms and biases,
    /// under 0.1%, are left out).
    pub fn weight_bytes(&self) -> u64 {
        // In u64: a 1.24 B model's f32 bytes overflow wasm32's usize.
        let m = &self.model;
        let linears: u64 = (0..m.num_layers())
            .flat_map(|layer| Target::ALL.map(move |t| (layer, t)))
            .filter_map(|(layer, t)| m.linear(layer, t))
            .map(|l| l.base.weight_bytes() as u64)
            .sum();
        let embed = match &m.model.embed_tokens.packed {
            Some(p) => p.stored_bytes() as u64,
            None => self.config.vocab_size as u64 * self.config.hidden_size as u64 * 4,
        };
        let head = m.output_layer();
        // A packed tied head reads the packed embedding's bytes.
        let head = if m.tied_head.is_some() && head.is_packed() && m.model.embed_tokens.packed.is_some() {
            0
        } else {
            head.weight_bytes() as u64
        };
        linears + embed + head
    }

    /// Adapter values that `lora` would train on this model.
    pub fn trainable_values(&self, lora: &crate::lora::LoraConfig) -> Result<usize, EngineError> {
        let (outs, ins) = self.widths_per_rank(&lora.targets)?;
        Ok(lora.rank * (outs + if lora.method.trains_down() { ins } else { 0 }))
    }

    /// Over every block's `targets`: the sum of their output widths and of their input widths.
    fn widths_per_rank(&self, targets: &[Target]) -> Result<(usize, usize), EngineError> {
        let targets = self.resolve_targets(targets)?;
        let (mut outs, mut ins) = (0, 0);
        for layer in 0..self.model.num_layers() {
            for &t in &targets {
                let (out, inp) = self.linear(layer, t)?.base.dims();
                outs += out;
                ins += inp;
            }
        }
        Ok((outs, ins))
    }

    /// What plans of training runs adapting `targets` on this model depend on (see
    /// [`PlanBasis`]).
    pub fn plan_basis(&self, targets: &[Target]) -> Result<PlanBasis, EngineError> {
        Ok(PlanBasis {
            config: self.config.clone(),
            weights: self.weight_bytes(),
            packed: self.model.has_packed_weights(),
            vocab_chunk: self.model.vocab_chunk,
            per_rank: self.widths_per_rank(targets)?,
            keeps_decoded: self.keeps_decoded(),
            keeps_scores: self.keeps_scores(),
        })
    }

    /// Whether training keeps attention's score matrices for the backward (see
    /// [`RunShape::keeps_scores`]): everywhere but on a GPU with its kernels on, and there for
    /// Gemma 2's soft-capped scores.
    pub fn keeps_scores(&self) -> bool {
        self.model.device() == Device::flex()
            || !crate::model::gpu_ops::kernels_on()
            || self.config.attn_logit_softcapping.is_some()
    }

    /// Whether a tracked packed layer keeps its decoded matrix until the backward (see
    /// [`RunShape::keeps_decoded`]): only a layer that burn's own product takes, a host-packed one
    /// on a GPU (a format with no device layout) or a device-laid-out one on the CPU backend. A
    /// host-packed layer on the CPU backend (natively and in wasm) and a device-laid-out one on a
    /// GPU dequantise again in their own backward.
    pub fn keeps_decoded(&self) -> bool {
        use crate::model::linear::PackedWeight;
        let host_products = self.model.device() == Device::flex();
        (0..self.model.num_layers())
            .flat_map(|layer| Target::ALL.map(move |t| (layer, t)))
            .filter_map(|(layer, t)| self.model.linear(layer, t))
            .any(|l| match &l.base.packed {
                Some(PackedWeight::Host { .. }) => !host_products,
                Some(PackedWeight::Device(_)) => host_products,
                None => false,
            })
    }

    /// The memory plan of a pass of `shape` on this model as loaded (see [`MemoryPlan`]).
    pub fn memory_plan(&self, shape: &RunShape, training: bool) -> MemoryPlan {
        MemoryPlan::new(&self.config, self.weight_bytes(), shape, training)
    }

    /// A summary for display.
    pub fn summary(&self) -> ModelSummary {
        let c = &self.config;
        let parameters = c.num_parameters();
        let packed = self.model.has_packed_weights();
        let train = crate::train::TrainConfig::default();
        let lora = crate::lora::LoraConfig::new(crate::lora::InitMethod::Lora, 16);
        let shape = RunShape {
            batch: train.batch,
            tokens: train.max_len,
            trainable: self.trainable_values(&lora).unwrap_or(0),
            blockwise: train.checkpoint_blocks.unwrap_or(packed),
            packed,
            vocab_chunk: self.model.vocab_chunk,
            keeps_decoded: self.keeps_decoded(),
            keeps_scores: self.keeps_scores(),
        };
        let weight_bytes = self.weight_bytes();
        ModelSummary {
            weight_bytes,
            packed,
            train_plan: self.memory_plan(&shape, true),
            fits_tab: largest_fitting(c, weight_bytes, &shape, TAB_BYTES),
            plan_basis: self.plan_basis(&Target::DEFAULT).ok().map(Box::new),
            architecture: c.model_type.model_type().to_string(),
            parameters,
            layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            heads: (c.num_attention_heads, c.num_key_value_heads),
            vocab_size: c.vocab_size,
            f32_bytes: parameters as u64 * 4,
            format: self.format,
            storage: self.storage.clone(),
            has_chat_template: self.tokenizer.chat_template.is_some(),
        }
    }
}
