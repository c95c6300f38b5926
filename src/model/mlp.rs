//! The gated feed-forward block: `down(act(gate(x)) · up(x))`, SwiGLU (`silu`, the LLaMA
//! family) or GeGLU (tanh-approximated GELU, Gemma), with gate and up as two layers or fused in
//! one (Phi-3's `gate_up_proj`, rows `[gate; up]`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::arch::Site;
use super::config::Activation;
use super::linear::{Linear, Projection};
use super::observe::ActivationObserver;
use super::weights::{VarBuilder, WeightError};

/// `mlp.{gate,up,down}_proj` (or `gate_up_proj` and `down_proj`), each a [`Projection`] (a plain
/// [`Linear`] when loaded).
#[derive(Module, Debug)]
pub struct Mlp<L: Projection> {
    /// `[intermediate, hidden]`; `None` where gate/up are fused.
    pub gate_proj: Option<L>,
    /// `[intermediate, hidden]`; `None` where gate/up are fused.
    pub up_proj: Option<L>,
    /// Phi-3's fused `[2·intermediate, hidden]`, rows `[gate; up]`.
    pub gate_up_proj: Option<L>,
    /// `[hidden, intermediate]`.
    pub down_proj: L,
    /// The gate's activation.
    #[module(skip)]
    pub act: Activation,
}

impl Mlp<Linear> {
    /// Loads the three projections under `vb` (`...mlp`).
    pub fn load(
        vb: &VarBuilder,
        hidden: usize,
        intermediate: usize,
        fused: bool,
        act: Activation,
    ) -> Result<Self, WeightError> {
        let separate = |name: &str| -> Result<Option<Linear>, WeightError> {
            (!fused)
                .then(|| Linear::load(&vb.pp(name), hidden, intermediate, false))
                .transpose()
        };
        Ok(Self {
            gate_proj: separate("gate_proj")?,
            up_proj: separate("up_proj")?,
            gate_up_proj: fused
                .then(|| Linear::load(&vb.pp("gate_up_proj"), hidden, 2 * intermediate, false))
                .transpose()?,
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
        let (gate, up) = match (&self.gate_up_proj, &self.gate_proj, &self.up_proj) {
            (Some(fused), ..) => {
                let y = fused.forward(x);
                let n = y.dims()[2] / 2;
                (y.clone().narrow(2, 0, n), y.narrow(2, n, n))
            }
            (None, Some(gate), Some(up)) => (gate.forward(x.clone()), up.forward(x)),
            _ => unreachable!("invariant: Mlp::load builds either gate_up_proj or both gate_proj and up_proj"),
        };
        let hidden = match self.act {
            Activation::Silu => super::cpu_ops::swiglu(gate, up),
            act => act.apply(gate) * up,
        };
        observer.observe(layer, Site::MlpHidden, &hidden);
        self.down_proj.forward(hidden)
    }
}
