//! The architecture tables: which linear layers of a block LoRA can adapt (their names in
//! Hugging Face, PEFT and GGUF checkpoints) and which input each reads (its activation site).
//! The CLI's `--targets`, the page's selectors, the GGUF name mapping, calibration and the PEFT
//! export all read these tables; a new architecture declares its targets and sites here.
//!
//! Plain data: no burn, so the page's own bundle uses it too.

use serde::{Deserialize, Serialize};

use super::config::Architecture;

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
    /// `self_attn.qkv_proj`: q, k and v fused in one layer (Phi-3), rows `[q; k; v]`.
    #[serde(rename = "qkv_proj")]
    Qkv,
    /// `mlp.gate_up_proj`: gate and up fused in one layer (Phi-3), rows `[gate; up]`.
    #[serde(rename = "gate_up_proj")]
    GateUp,
}

/// Where in a block a linear layer reads its input. Layers that share an input share a site:
/// q/k/v read [`Site::AttnInput`], gate/up read [`Site::MlpInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// RMSNorm'd residual stream entering attention (input of q, k, v).
    AttnInput,
    /// Attention context entering `o_proj`.
    AttnOutput,
    /// RMSNorm'd residual stream entering the MLP (input of gate, up).
    MlpInput,
    /// The gated activation entering `down_proj`.
    MlpHidden,
}

/// Everything about one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec {
    /// The target.
    pub target: Target,
    /// The short name the CLI accepts (`q`).
    pub short: &'static str,
    /// PEFT's module name (`q_proj`), as in `target_modules`.
    pub module: &'static str,
    /// The path inside a decoder layer (`self_attn.q_proj`), as in checkpoint keys.
    pub path: &'static str,
    /// llama.cpp's tensor name inside `blk.N.` (`attn_q`).
    pub gguf: &'static str,
    /// The input it reads.
    pub site: Site,
}

/// Everything about one activation site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSpec {
    /// The site.
    pub site: Site,
    /// Its name in `spectra.json` and file names (`attn_input`).
    pub name: &'static str,
    /// What the page's selector says (`q/k/v input`).
    pub label: &'static str,
}

/// Every target of every architecture: the LLaMA family's seven linear layers in block order,
/// then Phi-3's fused ones.
pub const TARGETS: [TargetSpec; 9] = [
    TargetSpec {
        target: Target::Q,
        short: "q",
        module: "q_proj",
        path: "self_attn.q_proj",
        gguf: "attn_q",
        site: Site::AttnInput,
    },
    TargetSpec {
        target: Target::K,
        short: "k",
        module: "k_proj",
        path: "self_attn.k_proj",
        gguf: "attn_k",
        site: Site::AttnInput,
    },
    TargetSpec {
        target: Target::V,
        short: "v",
        module: "v_proj",
        path: "self_attn.v_proj",
        gguf: "attn_v",
        site: Site::AttnInput,
    },
    TargetSpec {
        target: Target::O,
        short: "o",
        module: "o_proj",
        path: "self_attn.o_proj",
        gguf: "attn_output",
        site: Site::AttnOutput,
    },
    TargetSpec {
        target: Target::Gate,
        short: "gate",
        module: "gate_proj",
        path: "mlp.gate_proj",
        gguf: "ffn_gate",
        site: Site::MlpInput,
    },
    TargetSpec {
        target: Target::Up,
        short: "up",
        module: "up_proj",
        path: "mlp.up_proj",
        gguf: "ffn_up",
        site: Site::MlpInput,
    },
    TargetSpec {
        target: Target::Down,
        short: "down",
        module: "down_proj",
        path: "mlp.down_proj",
        gguf: "ffn_down",
        site: Site::MlpHidden,
    },
    TargetSpec {
        target: Target::Qkv,
        short: "qkv",
        module: "qkv_proj",
        path: "self_attn.qkv_proj",
        gguf: "attn_qkv",
        site: Site::AttnInput,
    },
    TargetSpec {
        target: Target::GateUp,
        short: "gate_up",
        module: "gate_up_proj",
        path: "mlp.gate_up_proj",
        // llama.cpp stores Phi-3's fused gate/up as `ffn_up` with 2·intermediate rows.
        gguf: "ffn_up",
        site: Site::MlpInput,
    },
];

/// The LLaMA family's four activation sites, in block order.
pub const SITES: [SiteSpec; 4] = [
    SiteSpec {
        site: Site::AttnInput,
        name: "attn_input",
        label: "q/k/v input",
    },
    SiteSpec {
        site: Site::AttnOutput,
        name: "attn_output",
        label: "o_proj input",
    },
    SiteSpec {
        site: Site::MlpInput,
        name: "mlp_input",
        label: "gate/up input",
    },
    SiteSpec {
        site: Site::MlpHidden,
        name: "mlp_hidden",
        label: "down_proj input",
    },
];

/// What an architecture offers LoRA.
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    /// Adaptable linear layers, in block order.
    pub targets: &'static [Target],
    /// Their input sites, in block order.
    pub sites: &'static [SiteSpec],
}

/// llama, mistral, qwen2/3 and Gemma 2/3 share one block layout: seven separate layers (Gemma's
/// extra norms are not adaptable; its GeGLU product is the `mlp_hidden` site, the input of
/// `down_proj`).
pub const LLAMA_FAMILY: ArchSpec = ArchSpec {
    targets: &Target::DEFAULT,
    sites: &SITES,
};

/// Phi-3 (3, 3.5, 4-mini): q/k/v fused in `qkv_proj`, gate/up in `gate_up_proj`; the same four
/// inputs.
pub const PHI3: ArchSpec = ArchSpec {
    targets: &[Target::Qkv, Target::O, Target::GateUp, Target::Down],
    sites: &SITES,
};

impl Architecture {
    /// The targets and sites of this architecture.
    pub fn spec(self) -> &'static ArchSpec {
        match self {
            Architecture::Llama
            | Architecture::Mistral
            | Architecture::Qwen2
            | Architecture::Qwen3
            | Architecture::Gemma2
            | Architecture::Gemma3 => &LLAMA_FAMILY,
            Architecture::Phi3 => &PHI3,
        }
    }
}

impl ArchSpec {
    /// The requested targets as this architecture has them, sorted and without repeats: a target
    /// it has is kept, and a part of a fused layer names the fused layer (on Phi-3, `q`, `k` or
    /// `v` is `qkv_proj` and `gate` or `up` is `gate_up_proj`, so the default list of all seven
    /// means every layer on every architecture). Anything else is an error naming what it has.
    pub fn resolve(&self, requested: &[Target]) -> Result<Vec<Target>, String> {
        let mut out = Vec::with_capacity(requested.len());
        for &t in requested {
            let fused = match t {
                Target::Q | Target::K | Target::V => Target::Qkv,
                Target::Gate | Target::Up => Target::GateUp,
                other => other,
            };
            match [t, fused].into_iter().find(|c| self.targets.contains(c)) {
                Some(have) => out.push(have),
                None => {
                    let names: Vec<&str> = self.targets.iter().map(|t| t.module_name()).collect();
                    return Err(format!(
                        "this model has no `{}`; its adaptable layers are {}",
                        t.module_name(),
                        names.join(", ")
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl Target {
    /// Every target of every architecture.
    pub const ALL: [Target; 9] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
        Target::Qkv,
        Target::GateUp,
    ];

    /// The LLaMA family's seven, in block order: the default target list (on a fused
    /// architecture they name its fused layers, see [`ArchSpec::resolve`]).
    pub const DEFAULT: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// This target's row of [`TARGETS`].
    pub fn spec(self) -> &'static TargetSpec {
        TARGETS
            .iter()
            .find(|s| s.target == self)
            .expect("invariant: every target has a row in TARGETS")
    }

    /// PEFT's module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        self.spec().module
    }

    /// The path inside a decoder layer (`self_attn.q_proj`).
    pub fn path(self) -> &'static str {
        self.spec().path
    }

    /// Which input statistic this layer reads.
    pub fn site(self) -> Site {
        self.spec().site
    }

    /// Parses `q`, `q_proj`, `gate`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        TARGETS
            .iter()
            .find(|t| t.module == s || t.short == s)
            .map(|t| t.target)
            .ok_or_else(|| {
                let names: Vec<&str> = TARGETS.iter().map(|t| t.short).collect();
                format!("unknown target `{s}`; use {}", names.join(", "))
            })
    }

    /// Parses a comma-separated list (`q,k,v,o,gate,up,down`), sorted and without repeats.
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

impl Site {
    /// All sites in block order.
    pub const ALL: [Site; 4] = [Site::AttnInput, Site::AttnOutput, Site::MlpInput, Site::MlpHidden];

    /// This site's row of [`SITES`].
    pub fn spec(self) -> &'static SiteSpec {
        SITES
            .iter()
            .find(|s| s.site == self)
            .expect("invariant: every site has a row in SITES")
    }

    /// Its name in `spectra.json` (`attn_input`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parses a site name (`attn_input`).
    pub fn parse(s: &str) -> Option<Self> {
        SITES.iter().find(|x| x.name == s).map(|x| x.site)
    }
}

/// The distinct sites the given targets read, in block order.
pub fn sites_of(targets: &[Target]) -> Vec<Site> {
    let mut sites: Vec<Site> = targets.iter().map(|t| t.site()).collect();
    sites.sort();
    sites.dedup();
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_and_site_has_one_row_and_round_trips_through_its_names() {
        for t in Target::ALL {
            assert_eq!(TARGETS.iter().filter(|s| s.target == t).count(), 1);
            assert_eq!(Target::parse(t.spec().short), Ok(t));
            assert_eq!(Target::parse(t.module_name()), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.module_name()), "serde name = PEFT name");
            assert!(t.path().ends_with(t.module_name()));
        }
        for s in Site::ALL {
            assert_eq!(Site::parse(s.name()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()), "serde name = table name");
        }
    }

    #[test]
    fn target_lists_parse_sorted_and_reject_unknown_names() {
        assert_eq!(
            Target::parse_list("down,q, q_proj").unwrap(),
            vec![Target::Q, Target::Down]
        );
        assert!(Target::parse_list("q,lm_head").unwrap_err().contains("lm_head"));
        assert!(Target::parse_list(" , ").is_err());
        assert_eq!(
            sites_of(&[Target::Up, Target::Q, Target::K]),
            vec![Site::AttnInput, Site::MlpInput]
        );
    }

    #[test]
    fn targets_resolve_to_what_each_architecture_has() {
        let all = Target::DEFAULT.to_vec();
        assert_eq!(LLAMA_FAMILY.resolve(&all).unwrap(), all);
        assert_eq!(
            PHI3.resolve(&all).unwrap(),
            vec![Target::O, Target::Down, Target::Qkv, Target::GateUp]
        );
        assert_eq!(PHI3.resolve(&[Target::V]).unwrap(), vec![Target::Qkv]);
        let err = LLAMA_FAMILY.resolve(&[Target::Qkv]).unwrap_err();
        assert!(err.contains("qkv_proj") && err.contains("q_proj, k_proj"), "{err}");
        for arch in [LLAMA_FAMILY, PHI3] {
            let sites: Vec<Site> = arch.sites.iter().map(|s| s.site).collect();
            assert_eq!(sites_of(arch.targets), sites, "every site is read by some target");
        }
    }
}
