//! The seven linear modules of a block, as an enum, and access to them.

use serde::{Deserialize, Serialize};

use super::linear::Linear;
use super::{LlamaForCausalLM, Site};

/// A linear layer of a block (what LoRA can adapt), named after its Hugging Face module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// `self_attn.q_proj`.
    #[serde(rename = "q_proj")]
    Q,
    /// `self_attn.k_proj`.
    #[serde(rename = "k_proj")]
    K,
    /// `self_attn.v_proj`.
    #[serde(rename = "v_proj")]
    V,
    /// `self_attn.o_proj`.
    #[serde(rename = "o_proj")]
    O,
    /// `mlp.gate_proj`.
    #[serde(rename = "gate_proj")]
    Gate,
    /// `mlp.up_proj`.
    #[serde(rename = "up_proj")]
    Up,
    /// `mlp.down_proj`.
    #[serde(rename = "down_proj")]
    Down,
}

impl Target {
    /// All seven, in block order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// PEFT's module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The path inside a decoder layer (`self_attn.q_proj`).
    pub fn path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Which input statistic this layer reads.
    pub fn site(self) -> Site {
        match self {
            Target::Q | Target::K | Target::V => Site::AttnInput,
            Target::O => Site::AttnOutput,
            Target::Gate | Target::Up => Site::MlpInput,
            Target::Down => Site::MlpHidden,
        }
    }

    /// Parses `q`, `q_proj`, `gate`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Target::ALL
            .into_iter()
            .find(|t| t.module_name() == s || t.module_name().trim_end_matches("_proj") == s)
            .ok_or_else(|| format!("unknown target `{s}`; use q, k, v, o, gate, up, down"))
    }

    /// Parses a comma-separated list (`q,k,v,o,gate,up,down`).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut out: Vec<Target> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Target::parse)
            .collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err("no targets given; use e.g. q,k,v,o,gate,up,down".into());
        }
        Ok(out)
    }
}

impl LlamaForCausalLM {
    /// The module `target` of block `layer`.
    pub fn linear(&self, layer: usize, target: Target) -> &Linear {
        let block = &self.model.layers[layer];
        match target {
            Target::Q => &block.self_attn.q_proj,
            Target::K => &block.self_attn.k_proj,
            Target::V => &block.self_attn.v_proj,
            Target::O => &block.self_attn.o_proj,
            Target::Gate => &block.mlp.gate_proj,
            Target::Up => &block.mlp.up_proj,
            Target::Down => &block.mlp.down_proj,
        }
    }

    /// The module `target` of block `layer`, mutably.
    pub fn linear_mut(&mut self, layer: usize, target: Target) -> &mut Linear {
        let block = &mut self.model.layers[layer];
        match target {
            Target::Q => &mut block.self_attn.q_proj,
            Target::K => &mut block.self_attn.k_proj,
            Target::V => &mut block.self_attn.v_proj,
            Target::O => &mut block.self_attn.o_proj,
            Target::Gate => &mut block.mlp.gate_proj,
            Target::Up => &mut block.mlp.up_proj,
            Target::Down => &mut block.mlp.down_proj,
        }
    }
}
