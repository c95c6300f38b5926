//! The SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::linear::Linear;
use super::observe::{ActivationObserver, Site};
use super::weights::{VarBuilder, WeightError};

/// `mlp.{gate,up,down}_proj`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[intermediate, hidden]`.
    pub gate_proj: Linear,
    /// `[intermediate, hidden]`.
    pub up_proj: Linear,
    /// `[hidden, intermediate]`.
    pub down_proj: Linear,
}

impl Mlp {
    /// Loads the three projections under `vb` (`...mlp`).
    pub fn load(vb: &VarBuilder, hidden: usize, intermediate: usize) -> Result<Self, WeightError> {
        Ok(Self {
            gate_proj: Linear::load(&vb.pp("gate_proj"), hidden, intermediate, false)?,
            up_proj: Linear::load(&vb.pp("up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::load(&vb.pp("down_proj"), intermediate, hidden, false)?,
        })
    }

    /// # Shapes
    /// - x: `[B, T, H]` → `[B, T, H]`
    pub fn forward(&self, x: Tensor<3>, layer: usize, observer: &mut dyn ActivationObserver) -> Tensor<3> {
        observer.observe(layer, Site::MlpInput, &x);
        let hidden = silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x);
        observer.observe(layer, Site::MlpHidden, &hidden);
        self.down_proj.forward(hidden)
    }
}
