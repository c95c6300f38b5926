//! Hooks on the inputs of the linear layers, used to collect activation statistics.

use burn::tensor::Tensor;

use super::arch::Site;

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
