//! A memory plan: what holding, evaluating and training a model will take, before doing it
//! (plain data: the CLI prints it, the page can show it). Estimates in f32, from the shapes:
//!
//! - weights: as held (packed bytes where the base stays packed, else 4 per value; a dense tied
//!   output layer is a second, transposed copy of the embedding);
//! - adapter: every trainable value with its gradient and AdamW's two moments (16 bytes);
//! - activations: the largest working set of one pass. Block by block, that is every block's
//!   input plus one block's autodiff graph, its decoded weights when packed, and one vocabulary
//!   piece of the output layer; otherwise every block's graph (with its decoded weights where the
//!   backward keeps them: [`RunShape::keeps_decoded`]) and one vocabulary piece (training and
//!   evaluation take the loss a piece at a time either way).
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
    /// Whether a tracked packed layer keeps its decoded matrix until the backward (burn's
    /// product). A packed layer's own backward (on the CPU backend natively and in wasm, and a
    /// device-laid-out one on a GPU) decodes it again, so the whole graph holds one decoded block
    /// at a time, not one per block.
    #[serde(default = "yes")]
    pub keeps_decoded: bool,
    /// Whether training keeps each block's `[T, T]` attention scores and probabilities per head
    /// for the backward (burn's formulation, and the CPU backend's fused softmax). The GPU
    /// backends' attention kernel (`model::attention_kernel`) keeps a log-sum-exp per row
    /// instead. Evaluation's peak counts the scores either way.
    #[serde(default = "yes")]
    pub keeps_scores: bool,
}

/// `true`, the cautious default of [`RunShape::keeps_decoded`] and [`PlanBasis::keeps_decoded`].
fn yes() -> bool {
    true
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
        // after RoPE, the attention scores and their softmax (in training without them, a
        // log-sum-exp per head), the MLP's four I-wide tensors.
        let scores = if training && !shape.keeps_scores {
            heads
        } else {
            2 * heads * t
        };
        let block_per_row = 6 * h + 3 * (q + 2 * kv) + 4 * i + scores;
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
            (false, _) => block + block_weights + chunked_head,
            (true, true) => (layers + 1) * rows * h * F32 + block + block_weights + chunked_head,
            (true, false) => {
                let decoded = if shape.keeps_decoded {
                    layers * block_weights
                } else {
                    block_weights
                };
                layers * block + decoded + chunked_head
            }
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

/// What the plans of a loaded model's training runs depend on, beyond the run itself: the page
/// keeps it with the model's summary and plans each setting as the user edits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanBasis {
    /// The model's configuration.
    pub config: ModelConfig,
    /// Bytes of the weights as held.
    pub weights: u64,
    /// Whether the frozen base is packed.
    pub packed: bool,
    /// Vocabulary rows per piece of the output layer.
    pub vocab_chunk: usize,
    /// Over the adapted layers of all blocks, per unit of rank: the sum of their output widths
    /// (the `B` factors' rows) and of their input widths (the `A` factors' columns).
    pub per_rank: (usize, usize),
    /// See [`RunShape::keeps_decoded`].
    #[serde(default = "yes")]
    pub keeps_decoded: bool,
    /// See [`RunShape::keeps_scores`].
    #[serde(default = "yes")]
    pub keeps_scores: bool,
}

/// The training settings a plan is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Adapter rank.
    pub rank: usize,
    /// Whether the `A` factors train too (all methods but LoRA-Null-v2).
    pub trains_down: bool,
    /// Block by block (`Some(true)`), the whole graph (`Some(false)`), or the default: block by
    /// block exactly when the base is packed.
    pub blockwise: Option<bool>,
}

/// A run whose plan is over the memory there is; its message names the numbers and, when one
/// exists, settings that fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TooBig {
    /// The settings asked for.
    pub asked: TrainSettings,
    /// Their plan.
    pub plan: MemoryPlan,
    /// The memory there is, bytes.
    pub budget: u64,
    /// Where that memory is, for the message ("a browser tab", "free on this machine").
    pub place: String,
    /// The largest settings that fit, with their plan, if any do.
    pub proposal: Option<(TrainSettings, MemoryPlan)>,
}

impl TooBig {
    fn describe(&self) -> String {
        let a = &self.asked;
        let p = &self.plan;
        let fix = match &self.proposal {
            Some((s, plan)) => format!(
                "batch {} × {} tokens{} fits (about {}): use that",
                s.batch,
                s.tokens,
                if s.blockwise == Some(true) {
                    ", block by block"
                } else {
                    ""
                },
                gib(plan.total)
            ),
            None => "no batch and length fit: use a smaller model or a more compressed file (a Q4 GGUF)".into(),
        };
        format!(
            "training batch {} × {} tokens needs about {} (weights {}, adapter and optimiser {}, activations {}), \
             more than the {} {}; {fix}",
            a.batch,
            a.tokens,
            gib(p.total),
            gib(p.weights),
            gib(p.adapter),
            gib(p.activations),
            gib(self.budget),
            self.place
        )
    }
}

impl PlanBasis {
    /// Whether `s` trains block by block on this model.
    pub fn blockwise(&self, s: &TrainSettings) -> bool {
        s.blockwise.unwrap_or(self.packed)
    }

    /// The plan of training with `s`.
    pub fn plan(&self, s: &TrainSettings) -> MemoryPlan {
        let (outs, ins) = self.per_rank;
        let shape = RunShape {
            batch: s.batch,
            tokens: s.tokens,
            trainable: s.rank * (outs + if s.trains_down { ins } else { 0 }),
            blockwise: self.blockwise(s),
            packed: self.packed,
            vocab_chunk: self.vocab_chunk,
            keeps_decoded: self.keeps_decoded,
            keeps_scores: self.keeps_scores,
        };
        MemoryPlan::new(&self.config, self.weights, &shape, true)
    }

    /// Settings that fit `budget`, as close to `s` as they can be: `s` itself; else `s` block by
    /// block (the same training, slower); else block by block with the largest batch × length
    /// (halving each, never above `s`'s, lengths down to 64; the longer length wins a tie).
    /// `None` when nothing fits.
    pub fn propose(&self, s: &TrainSettings, budget: u64) -> Option<(TrainSettings, MemoryPlan)> {
        let fits = |s: TrainSettings| {
            let plan = self.plan(&s);
            (plan.total <= budget).then_some((s, plan))
        };
        let blockwise = TrainSettings {
            blockwise: Some(true),
            ..*s
        };
        fits(*s)
            .or_else(|| (!self.blockwise(s)).then(|| fits(blockwise)).flatten())
            .or_else(|| {
                let halvings = |from: usize, floor: usize| {
                    std::iter::successors(Some(from), move |&n| (n / 2 >= floor).then_some(n / 2))
                };
                let mut options: Vec<TrainSettings> = halvings(s.batch.max(1), 1)
                    .flat_map(|batch| {
                        halvings(s.tokens.max(1), s.tokens.clamp(1, 64)).map(move |tokens| TrainSettings {
                            batch,
                            tokens,
                            ..blockwise
                        })
                    })
                    .collect();
                options.sort_by_key(|o| std::cmp::Reverse((o.batch * o.tokens, o.tokens)));
                options.into_iter().find_map(fits)
            })
    }

    /// The plan of `s` if it fits `budget` (memory in `place`), else why not and what would.
    pub fn check(&self, s: &TrainSettings, budget: u64, place: &str) -> Result<MemoryPlan, Box<TooBig>> {
        let plan = self.plan(s);
        if plan.total <= budget {
            return Ok(plan);
        }
        Err(Box::new(TooBig {
            asked: *s,
            plan,
            budget,
            place: place.to_string(),
            proposal: self.propose(s, budget),
        }))
    }
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
            keeps_decoded: true,
            keeps_scores: true,
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
    fn basis(weights: u64, packed: bool) -> PlanBasis {
        // Llama-3.2-1B's seven targets: outputs 2048 + 512 + 512 + 2048 + 8192 + 8192 + 2048,
        // inputs 2048 × 6 + 8192, over 16 blocks.
        PlanBasis {
            config: llama_1b(),
            weights,
            packed,
            vocab_chunk: 8192,
            per_rank: (16 * 23_552, 16 * 20_480),
            keeps_decoded: true,
            keeps_scores: true,
        }
    }

    fn settings(batch: usize, tokens: usize, blockwise: Option<bool>) -> TrainSettings {
        TrainSettings {
            batch,
            tokens,
            rank: 16,
            trains_down: true,
            blockwise,
        }
    }

    #[test]
    fn settings_that_fit_are_proposed_unchanged() {
        let b = basis(700 << 20, true);
        let s = settings(1, 256, None);
        assert_eq!(b.propose(&s, TAB_BYTES).map(|(p, _)| p), Some(s));
        assert!(b.check(&s, TAB_BYTES, "a browser tab has").is_ok());
        assert_eq!(
            b.plan(&s).adapter,
            16 * 16 * (23_552 + 20_480) * 16,
            "A and B, each value with its gradient and two moments"
        );
    }

    #[test]
    fn block_by_block_is_proposed_before_a_smaller_run() {
        let b = basis(700 << 20, true);
        let whole = settings(4, 512, Some(false));
        let (budget, blocks) = (3 << 30, b.plan(&settings(4, 512, Some(true))));
        assert!(b.plan(&whole).total > budget && blocks.total <= budget, "{blocks:?}");
        let (fit, plan) = b.propose(&whole, budget).expect("block by block fits");
        assert_eq!(fit, settings(4, 512, Some(true)));
        assert_eq!(plan, blocks);
    }

    #[test]
    fn a_smaller_run_is_the_largest_that_fits() {
        let b = basis(2 << 30, false);
        let asked = settings(8, 512, None);
        let budget = 3 << 30;
        let (fit, plan) = b.propose(&asked, budget).expect("something fits");
        assert!(plan.total <= budget && fit.blockwise == Some(true));
        assert!(fit.batch <= 8 && fit.tokens <= 512 && fit.batch * fit.tokens < 8 * 512);
        for larger in [
            settings(fit.batch * 2, fit.tokens, Some(true)),
            settings(fit.batch, fit.tokens * 2, Some(true)),
        ] {
            if larger.batch <= 8 && larger.tokens <= 512 {
                assert!(b.plan(&larger).total > budget, "{larger:?} fits too");
            }
        }
    }

    #[test]
    fn a_refusal_names_the_numbers_and_the_fix() {
        let b = basis(2 << 30, false);
        let err = b
            .check(&settings(8, 512, None), 3 << 30, "free on this machine")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("training batch 8 × 512 tokens needs about "), "{text}");
        assert!(text.contains("more than the 3.00 GiB free on this machine"), "{text}");
        assert!(text.contains(", block by block fits (about "), "{text}");
        let none = b
            .check(&settings(1, 64, None), 1 << 30, "a browser tab has")
            .unwrap_err();
        assert!(none.proposal.is_none());
        assert!(none.to_string().contains("no batch and length fit"), "{none}");
    }

    #[test]
    fn a_whole_graph_that_decodes_again_holds_one_decoded_block() {
        let c = llama_1b();
        let keeps = MemoryPlan::new(&c, 700 << 20, &shape(false, true), true);
        let again = RunShape {
            keeps_decoded: false,
            ..shape(false, true)
        };
        let again = MemoryPlan::new(&c, 700 << 20, &again, true);
        // One block's decoded f32 weights and their working copy: 2 · 4 bytes per value.
        let block = 2 * 4 * (2048 * 2048 * 2 + 2 * 2048 * 512 + 3 * 2048 * 8192);
        assert_eq!(keeps.activations - again.activations, 15 * block);
        let f32_base = RunShape {
            packed: false,
            ..shape(false, true)
        };
        assert_eq!(
            MemoryPlan::new(
                &c,
                5 << 30,
                &RunShape {
                    keeps_decoded: false,
                    ..f32_base
                },
                true
            )
            .activations,
            MemoryPlan::new(&c, 5 << 30, &f32_base, true).activations,
            "an f32 base decodes nothing"
        );
    }

    #[test]
    fn training_without_the_score_matrices_plans_for_a_log_sum_exp_per_head() {
        let c = llama_1b();
        let whole = |keeps_scores: bool, training: bool| {
            let s = RunShape {
                tokens: 512,
                keeps_scores,
                ..shape(false, false)
            };
            MemoryPlan::new(&c, 5 << 30, &s, training).activations
        };
        // 16 blocks × 512 rows × 32 heads × (2 × 512 − 1) f32.
        assert_eq!(whole(true, true) - whole(false, true), 16 * 512 * 32 * 1023 * 4);
        assert_eq!(
            whole(true, false),
            whole(false, false),
            "evaluation computes the scores either way"
        );
    }
}
