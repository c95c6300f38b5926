//! The next-token loss taken a vocabulary piece at a time: the `[tokens, vocab]` logits (150–260 k
//! wide for Qwen and Gemma) never exist at once, nor, in training, with their gradient; with a
//! packed output layer only one piece of it exists as f32.

use burn::tensor::Tensor;

use super::{LlamaForCausalLM, Projection, cpu_linear, cpu_ops};

/// Far below any logit, finite so that `exp(m_old − m_new)` stays 0 rather than NaN.
const NEG_LARGE: f32 = -1.0e30;

impl<L: Projection> LlamaForCausalLM<L> {
    /// `Σ mask·(−log p(label))` over the rows of `normed` (`[N, H]`, final-normed hidden states)
    /// for the labels `labels` (`[N]`, host) with weights `mask` (`[N]`), the logits computed
    /// `self.vocab_chunk` rows of the output layer at a time with an online log-sum-exp. With
    /// `grad_scale = Some(c)`, also returns `c · ∂(Σ)/∂normed`, `[N, H]`:
    /// `(softmax(z) − onehot(label)) · W`, summed over the same pieces.
    ///
    /// Gemma 2's soft-cap `z ↦ tanh(z/c)·c` is applied to each piece (and its derivative
    /// `1 − tanh²` to the gradient).
    pub fn chunked_nll(
        &self,
        normed: Tensor<2>,
        labels: &[usize],
        mask: Tensor<1>,
        grad_scale: Option<f64>,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        let [n, h] = normed.dims();
        let device = normed.device();
        let head = self.output_layer();
        let (vocab, chunk) = (head.dims().0, self.vocab_chunk.max(1));
        let cap = self.model.final_logit_softcapping;
        // Returns the capped logits and, with a cap, the derivative of the cap.
        let softcap = |z: Tensor<2>| match cap {
            Some(c) => {
                let t = z.div_scalar(c).tanh();
                (t.clone().mul_scalar(c), Some(t.square().neg().add_scalar(1.0)))
            }
            None => (z, None),
        };
        let mut m = Tensor::<2>::full([n, 1], NEG_LARGE, &device);
        let mut s = Tensor::<2>::zeros([n, 1], &device);
        let mut acc = grad_scale.map(|_| Tensor::<2>::zeros([n, h], &device));
        for start in (0..vocab).step_by(chunk) {
            let w = head.weight_columns(start..(start + chunk).min(vocab)); // [H, c]
            let (z, dcap) = softcap(cpu_linear::matmul(normed.clone(), w.clone())); // [N, c]
            let [m_new, alpha, p, s_new] = cpu_ops::softmax_piece(z, m, s);
            s = s_new;
            acc = acc.map(|a| {
                let g = match dcap {
                    Some(d) => p * d,
                    None => p,
                };
                a * alpha + cpu_linear::matmul(g, w.transpose())
            });
            m = m_new;
        }
        let label_rows = head.weight_rows(labels); // [N, H]
        let (z_label, dcap_label) = softcap((normed * label_rows.clone()).sum_dim(1));
        let weights = mask.reshape([n, 1]);
        let nll = ((m + s.clone().log() - z_label) * weights.clone()).sum();
        let grad = acc.zip(grad_scale).map(|(a, c)| {
            let label_term = match dcap_label {
                Some(d) => label_rows * d,
                None => label_rows,
            };
            (a / s - label_term) * weights.mul_scalar(c)
        });
        (nll, grad)
    }
}
