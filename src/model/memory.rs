//! A memory plan: what holding, evaluating and training a model will take, before doing it
//! (plain data: the CLI prints it, the page can show it). Estimates in f32, from the shapes:
//!
//! - weights: as held (packed bytes where the base stays packed, else 4 per value; a dense tied
//!   output layer is a second, transposed copy of the embedding);
//! - adapter: every trainable value with its gradient and AdamW's two moments (16 bytes);
//! - activations: the largest working set of one pass. Block by block, that is every block's
//!   input plus one block's autodiff graph, its decoded weights when packed, and one vocabulary
//!   piece of the output layer; otherwise every block's graph and one vocabulary piece (training
//!   takes the loss a piece at a time either way; evaluation on an f32 base takes the whole
//!   `[tokens, vocab]` logits with their log-softmax).
//!
//! BENCHMARKS.md ("Packed base") compares the plan with measured peak memory.

use serde::{Deserialize, Serialize};

use super::config::ModelConfig;

/// Bytes of one f32.
const F32: u64 = 4;

/// The run a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunShape {
    /// Sequences per pass.
    pub batch: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Trainable values (adapter factors); 0 for evaluation.
    pub trainable: usize,
    /// Training: whether it goes block by block (gradient checkpointing). Evaluation: ignored.
    pub blockwise: bool,
    /// Whether the frozen base is packed (decoded a layer at a time).
    pub packed: bool,
    /// Vocabulary rows per piece of the output layer when taken in pieces.
    pub vocab_chunk: usize,
}

/// What a run is expected to hold at its peak, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// The model's weights as held.
    pub weights: u64,
    /// Adapter factors, gradients and optimiser moments.
    pub adapter: u64,
    /// Activations (and transient decoded weights) of the largest pass.
    pub activations: u64,
    /// The sum.
    pub total: u64,
}

impl MemoryPlan {
    /// The plan of `shape` on a model of configuration `c` whose weights hold `weights` bytes;
    /// `training` adds the autodiff graph, the gradients and the optimiser.
    pub fn new(c: &ModelConfig, weights: u64, shape: &RunShape, training: bool) -> Self {
        let rows = (shape.batch * shape.tokens) as u64;
        let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        let heads = c.num_attention_heads as u64;
        let t = shape.tokens as u64;
        let layers = c.num_hidden_layers as u64;
        let vocab = c.vocab_size as u64;
        // Per token of one block: norms, residuals and projections' outputs, q/k/v before and
        // after RoPE, the attention scores and their softmax, the MLP's four I-wide tensors.
        let block_per_row = 6 * h + 3 * (q + 2 * kv) + 4 * i + 2 * heads * t;
        let block = rows * block_per_row * F32;
        // One block's weights decoded to f32 (and their transposed working copy).
        let block_weights = if shape.packed {
            2 * (h * q + 2 * h * kv + q * h + 3 * h * i) * F32
        } else {
            0
        };
        let piece = (shape.vocab_chunk as u64).min(vocab);
        let chunked_head = rows * piece * 3 * F32 + if shape.packed { 2 * piece * h * F32 } else { 0 };
        let activations = match (training, shape.blockwise) {
            (false, _) => {
                let head = if shape.packed {
                    chunked_head
                } else {
                    rows * vocab * 2 * F32
                };
                block + block_weights + head
            }
            (true, true) => (layers + 1) * rows * h * F32 + block + block_weights + chunked_head,
            (true, false) => layers * (block + block_weights) + chunked_head,
        };
        let adapter = if training { shape.trainable as u64 * 4 * F32 } else { 0 };
        Self {
            weights,
            adapter,
            activations,
            total: weights + adapter + activations,
        }
    }
}

/// Browser tabs give wasm at most 4 GiB.
pub const TAB_BYTES: u64 = 4 << 30;

/// The largest training run, of batches 8..1 × lengths 512..64 (halving, largest product first),
/// whose plan fits in `budget`; `None` if even 1 × 64 does not.
pub fn largest_fitting(
    c: &ModelConfig,
    weights: u64,
    shape: &RunShape,
    budget: u64,
) -> Option<(usize, usize, MemoryPlan)> {
    let mut options: Vec<(usize, usize)> = [8, 4, 2, 1]
        .into_iter()
        .flat_map(|b| [512, 256, 128, 64].map(|t| (b, t)))
        .collect();
    options.sort_by_key(|&(b, t)| std::cmp::Reverse(b * t));
    options.into_iter().find_map(|(batch, tokens)| {
        let plan = MemoryPlan::new(
            c,
            weights,
            &RunShape {
                batch,
                tokens,
                ..*shape
            },
            true,
        );
        (plan.total <= budget).then_some((batch, tokens, plan))
    })
}

/// Bytes as GiB with two decimals, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_1b() -> ModelConfig {
        let json = r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 64, "vocab_size": 128256, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}"#;
        ModelConfig::from_hf_json(json).unwrap()
    }

    fn shape(blockwise: bool, packed: bool) -> RunShape {
        RunShape {
            batch: 1,
            tokens: 256,
            trainable: 11_250_000,
            blockwise,
            packed,
            vocab_chunk: 8192,
        }
    }

    #[test]
    fn block_by_block_needs_far_less_than_the_whole_graph() {
        let c = llama_1b();
        let whole = MemoryPlan::new(&c, 5 << 30, &shape(false, false), true);
        let blocks = MemoryPlan::new(&c, 5 << 30, &shape(true, false), true);
        assert!(blocks.activations * 4 < whole.activations, "{blocks:?} vs {whole:?}");
        let blocks = MemoryPlan::new(&c, 700 << 20, &shape(true, true), true);
        assert_eq!(blocks.total, blocks.weights + blocks.adapter + blocks.activations);
        // 16 bytes per trainable value: the value, its gradient and two moments.
        assert_eq!(blocks.adapter, 11_250_000 * 16);
    }

    #[test]
    fn the_largest_fitting_run_fits_and_the_next_larger_does_not() {
        let c = llama_1b();
        let s = shape(true, true);
        let (b, t, plan) = largest_fitting(&c, 700 << 20, &s, 2 << 30).expect("something fits 2 GiB");
        assert!(plan.total <= 2 << 30);
        let bigger = MemoryPlan::new(
            &c,
            700 << 20,
            &RunShape {
                batch: b * 2,
                tokens: t,
                ..s
            },
            true,
        );
        assert!(bigger.total > 2 << 30 || b == 8, "batch {} x {t} would fit too", b * 2);
        assert!(
            largest_fitting(&c, 700 << 20, &s, 800 << 20).is_none(),
            "nothing fits below the weights"
        );
    }

    #[test]
    fn evaluation_holds_no_adapter_state_and_less_than_training() {
        let c = llama_1b();
        let eval = MemoryPlan::new(&c, 700 << 20, &shape(true, true), false);
        let train = MemoryPlan::new(&c, 700 << 20, &shape(true, true), true);
        assert_eq!(eval.adapter, 0);
        assert!(eval.total < train.total);
    }
}
