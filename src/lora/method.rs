//! The initialisation methods, as an enum.

use serde::{Deserialize, Serialize};

/// The LoRA initialisations (algorithm.md §1 and §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitMethod {
    /// PEFT default: Kaiming-uniform A, B = 0.
    Lora,
    /// PEFT `"gaussian"`: A ~ N(0, 1/r²), B = 0.
    Gaussian,
    /// Principal singular triplets of W.
    Pissa,
    /// Minor singular triplets of W.
    Milora,
    /// QR of W.
    Olora,
    /// CorDA knowledge-preserved mode: smallest triplets of SVD(W·C).
    CordaKpm,
    /// CorDA instruction-previewed mode: largest triplets of SVD(W·C).
    CordaIpm,
    /// LoRA-Null v1: the activation null space, both factors trained.
    Null,
    /// LoRA-Null v2: same initialisation, down projection frozen.
    NullV2,
    /// LoRA-Null zero-B: A = Pᵀ, B = 0, W unchanged.
    NullZero,
}

impl InitMethod {
    /// All methods.
    pub const ALL: [InitMethod; 10] = [
        InitMethod::Lora,
        InitMethod::Gaussian,
        InitMethod::Pissa,
        InitMethod::Milora,
        InitMethod::Olora,
        InitMethod::CordaKpm,
        InitMethod::CordaIpm,
        InitMethod::Null,
        InitMethod::NullV2,
        InitMethod::NullZero,
    ];

    /// The CLI name (`null-v2`, ...).
    pub fn name(self) -> &'static str {
        match self {
            InitMethod::Lora => "lora",
            InitMethod::Gaussian => "gaussian",
            InitMethod::Pissa => "pissa",
            InitMethod::Milora => "milora",
            InitMethod::Olora => "olora",
            InitMethod::CordaKpm => "corda-kpm",
            InitMethod::CordaIpm => "corda-ipm",
            InitMethod::Null => "null",
            InitMethod::NullV2 => "null-v2",
            InitMethod::NullZero => "null-zero",
        }
    }

    /// Whether activation statistics (`--calib`) are needed.
    pub fn needs_calibration(self) -> bool {
        matches!(
            self,
            InitMethod::CordaKpm | InitMethod::CordaIpm | InitMethod::Null | InitMethod::NullV2 | InitMethod::NullZero
        )
    }

    /// Whether the method moves part of W into the adapter (so the base becomes a residual and
    /// a PEFT export needs the rank-2r conversion).
    pub fn changes_base(self) -> bool {
        matches!(
            self,
            InitMethod::Pissa
                | InitMethod::Milora
                | InitMethod::Olora
                | InitMethod::CordaKpm
                | InitMethod::CordaIpm
                | InitMethod::Null
                | InitMethod::NullV2
        )
    }

    /// Whether the down projection A is trained (LoRA-Null-v2 freezes it).
    pub fn trains_down(self) -> bool {
        self != InitMethod::NullV2
    }
}

impl std::str::FromStr for InitMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let alias = match norm.as_str() {
            "lora-null" | "null-v1" => "null",
            "lora-null-v2" => "null-v2",
            "corda" => "corda-kpm",
            other => other,
        };
        InitMethod::ALL.into_iter().find(|m| m.name() == alias).ok_or_else(|| {
            let names: Vec<&str> = InitMethod::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method `{s}`; use one of {}", names.join(", "))
        })
    }
}
