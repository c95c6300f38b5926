//! Hooks on the inputs of the linear layers, used to collect activation statistics.

use burn::tensor::Tensor;

/// Where in a block a linear layer reads its input. Layers that share an input share a site:
/// q/k/v read [`Site::AttnInput`], gate/up read [`Site::MlpInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// RMSNorm'd residual stream entering attention (input of q, k, v).
    AttnInput,
    /// Attention context entering `o_proj`.
    AttnOutput,
    /// RMSNorm'd residual stream entering the MLP (input of gate, up).
    MlpInput,
    /// `silu(gate)·up` entering `down_proj`.
    MlpHidden,
}

impl Site {
    /// All sites in block order.
    pub const ALL: [Site; 4] = [Site::AttnInput, Site::AttnOutput, Site::MlpInput, Site::MlpHidden];
}

/// Receives the input of every linear layer during a forward pass.
pub trait ActivationObserver {
    /// `x` has shape `[B, T, d_in]`.
    fn observe(&mut self, layer: usize, site: Site, x: &Tensor<3>);
}

/// The observer that does nothing (plain inference and training).
pub struct NoObserver;

impl ActivationObserver for NoObserver {
    fn observe(&mut self, _: usize, _: Site, _: &Tensor<3>) {}
}
