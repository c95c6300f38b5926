//! Autoregressive generation with a key/value cache: greedy, or temperature / top-p sampling.

use burn::tensor::{Int, Tensor, TensorData};

use super::EvalError;
use crate::linalg::Rng;
use crate::model::weights::read_f32;
use crate::model::{KvCache, LlamaForCausalLM, NoObserver, Projection};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Stop after this many new tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; `None` (or 0) means greedy argmax.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass; `None` means the whole distribution.
    pub top_p: Option<f32>,
    /// Seed for sampling.
    pub seed: u64,
    /// Generation stops after emitting any of these ids (EOS).
    pub stop_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: None,
            top_p: None,
            seed: 0,
            stop_ids: Vec::new(),
        }
    }
}

/// Generates up to `max_new_tokens` after `prompt`; `on_token` sees each new id as it comes
/// and may return `false` to stop. Returns the new ids (a stop id, if hit, is included).
pub async fn generate<L: Projection>(
    model: &LlamaForCausalLM<L>,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>, EvalError> {
    if prompt.is_empty() {
        return Err(EvalError::Invalid(
            "the prompt is empty; give at least one token".into(),
        ));
    }
    let device = model.device();
    let mut rng = Rng::new(opts.seed);
    let mut cache = KvCache::default();
    let mut out = Vec::new();
    let mut next_input: Vec<u32> = prompt.to_vec();
    while out.len() < opts.max_new_tokens {
        let t = next_input.len();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(next_input.iter().map(|&x| x as i64).collect(), [1, t]),
            &device,
        );
        let hidden = model
            .hidden_states(ids, Some(&mut cache), &mut NoObserver)
            .narrow(1, t - 1, 1);
        let logits = model.logits(hidden);
        let row = read_f32(logits).await.map_err(EvalError::Device)?;
        let token = pick(&row, opts, &mut rng);
        out.push(token);
        if opts.stop_ids.contains(&token) || !on_token(token) {
            break;
        }
        next_input = vec![token];
    }
    Ok(out)
}

/// Greedy argmax (first maximum on ties, as torch.argmax), or a sample.
pub fn pick(logits: &[f32], opts: &GenerateOptions, rng: &mut Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    let temperature = match opts.temperature {
        Some(t) if t > 0.0 => t,
        _ => return argmax(),
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, (((l - max) / temperature) as f64).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top_p = opts.top_p.unwrap_or(1.0).clamp(0.0, 1.0) as f64;
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1;
        if mass >= top_p {
            break;
        }
    }
    let mut u = rng.uniform() * mass;
    for p in &probs[..kept] {
        u -= p.1;
        if u <= 0.0 {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}
