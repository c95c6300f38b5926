//! Perplexity over non-overlapping windows.

use burn::tensor::{Int, Tensor, TensorData};

use super::EvalError;
use crate::model::{LlamaForCausalLM, NoObserver, Projection};

/// Result of [`perplexity`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerplexityReport {
    /// `exp(nll_sum / scored)`.
    pub perplexity: f64,
    /// Tokens used (all windows).
    pub tokens: usize,
    /// Tokens scored (each window's first token is not).
    pub scored: usize,
    /// Sum of negative log-likelihoods, nats.
    pub nll_sum: f64,
}

/// Perplexity of `ids` over consecutive non-overlapping windows of `seq_len` tokens. Each window
/// is an independent forward pass; token t is predicted from tokens < t of its window, so the
/// first token of each window is not scored. A final window shorter than 2 tokens is dropped.
/// `progress(done, total)` is called after each window.
pub async fn perplexity<L: Projection>(
    model: &LlamaForCausalLM<L>,
    ids: &[u32],
    seq_len: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityReport, EvalError> {
    if seq_len < 2 {
        return Err(EvalError::WindowTooShort(seq_len));
    }
    let windows: Vec<&[u32]> = ids.chunks(seq_len).filter(|w| w.len() >= 2).collect();
    if windows.is_empty() {
        return Err(EvalError::TooShort(ids.len()));
    }
    let device = model.device();
    let (mut nll_sum, mut scored, mut tokens) = (0f64, 0usize, 0usize);
    for (i, window) in windows.iter().enumerate() {
        let t = window.len();
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(window.iter().map(|&x| x as i64).collect(), [1, t]),
            &device,
        );
        // A piece of the vocabulary at a time: never the `[tokens, vocab]` logits at once (nor,
        // for a packed head, the head decoded to f32).
        let hidden = model.hidden_states(input, None, &mut NoObserver);
        let h = hidden.dims()[2];
        let normed = hidden.narrow(1, 0, t - 1).reshape([t - 1, h]);
        let labels: Vec<usize> = window[1..].iter().map(|&x| x as usize).collect();
        let mask = Tensor::<1>::ones([t - 1], &device);
        let nll = model.chunked_nll(normed, &labels, mask, None).0;
        let sum: f32 = nll
            .into_scalar_async()
            .await
            .map_err(|e| EvalError::Device(format!("{e:?}")))?;
        nll_sum += sum as f64;
        scored += t - 1;
        tokens += t;
        progress(i + 1, windows.len());
    }
    Ok(PerplexityReport {
        perplexity: (nll_sum / scored as f64).exp(),
        tokens,
        scored,
        nll_sum,
    })
}

/// One forward pass over `ids` as a batch of one, waiting for the device to finish (reads one
/// scalar back). Used by the forward benchmark.
pub async fn forward_sync_probe<L: Projection>(model: &LlamaForCausalLM<L>, ids: &[u32]) -> Result<f32, EvalError> {
    let device = model.device();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
        &device,
    );
    model
        .forward(input)
        .sum()
        .into_scalar_async()
        .await
        .map_err(|e| EvalError::Device(format!("{e:?}")))
}

/// Logits `[T, vocab]` of one sequence, on the host.
pub async fn logits<L: Projection>(
    model: &LlamaForCausalLM<L>,
    ids: &[u32],
) -> Result<crate::io::HostTensor, EvalError> {
    let device = model.device();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
        &device,
    );
    let out = model.forward(input);
    let [_, t, v] = out.dims();
    let data = crate::model::weights::read_f32(out).await.map_err(EvalError::Device)?;
    Ok(crate::io::HostTensor::new(data, vec![t, v]))
}
