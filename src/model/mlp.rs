//! The SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::arch::Site;
use super::linear::{Linear, Projection};
use super::observe::ActivationObserver;
use super::weights::{VarBuilder, WeightError};

/// `mlp.{gate,up,down}_proj`, each a [`Projection`] (a plain [`Linear`] when loaded).
#[derive(Module, Debug)]
pub struct Mlp<L: Projection> {
    /// `[intermediate, hidden]`.
    pub gate_proj: L,
    /// `[intermediate, hidden]`.
    pub up_proj: L,
    /// `[hidden, intermediate]`.
    pub down_proj: L,
}

impl Mlp<Linear> {
    /// Loads the three projections under `vb` (`...mlp`).
    pub fn load(vb: &VarBuilder, hidden: usize, intermediate: usize) -> Result<Self, WeightError> {
        Ok(Self {
            gate_proj: Linear::load(&vb.pp("gate_proj"), hidden, intermediate, false)?,
            up_proj: Linear::load(&vb.pp("up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::load(&vb.pp("down_proj"), intermediate, hidden, false)?,
        })
    }
}

impl<L: Projection> Mlp<L> {
    /// # Shapes
    /// - x: `[B, T, H]` → `[B, T, H]`
    pub fn forward(&self, x: Tensor<3>, layer: usize, observer: &mut dyn ActivationObserver) -> Tensor<3> {
        observer.observe(layer, Site::MlpInput, &x);
        let hidden = silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x);
        observer.observe(layer, Site::MlpHidden, &hidden);
        self.down_proj.forward(hidden)
    }
}
