//! The gated feed-forward block: `down(act(gate(x)) · up(x))`, SwiGLU (`silu`, the LLaMA
//! family) or GeGLU (tanh-approximated GELU, Gemma).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::arch::Site;
use super::config::Activation;
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
    /// The gate's activation.
    #[module(skip)]
    pub act: Activation,
}

impl Mlp<Linear> {
    /// Loads the three projections under `vb` (`...mlp`).
    pub fn load(vb: &VarBuilder, hidden: usize, intermediate: usize, act: Activation) -> Result<Self, WeightError> {
        Ok(Self {
            gate_proj: Linear::load(&vb.pp("gate_proj"), hidden, intermediate, false)?,
            up_proj: Linear::load(&vb.pp("up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::load(&vb.pp("down_proj"), intermediate, hidden, false)?,
            act,
        })
    }
}

/// GELU, tanh approximation (PyTorch `gelu(x, approximate="tanh")`, transformers'
/// `gelu_pytorch_tanh`): `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner =
        (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044_715)).mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

impl Activation {
    /// Applies the activation elementwise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Silu => silu(x),
            Activation::GeluTanh => gelu_tanh(x),
        }
    }
}

impl<L: Projection> Mlp<L> {
    /// # Shapes
    /// - x: `[B, T, H]` → `[B, T, H]`
    pub fn forward(&self, x: Tensor<3>, layer: usize, observer: &mut dyn ActivationObserver) -> Tensor<3> {
        observer.observe(layer, Site::MlpInput, &x);
        let hidden = self.act.apply(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x);
        observer.observe(layer, Site::MlpHidden, &hidden);
        self.down_proj.forward(hidden)
    }
}
