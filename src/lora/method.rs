//! The initialisation methods, as one table: everything about a method (its formula, whether it
//! needs calibration, whether it changes the base, how it is exported, whether the down
//! projection trains, its label and help text) is its row of [`METHODS`]. The CLI's help, the
//! page's selector, the initialisation and the export all read the table, so adding a method is
//! adding a row (and, for a new formula, a function in `linalg::init`).
//!
//! Plain data (no burn): the page's own bundle reads it too.

use serde::{Deserialize, Serialize};

use crate::linalg::init::Pick;
use crate::linalg::jobs::Formula;

/// The LoRA initialisations (algorithm.md §1 and §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// How a trained adapter becomes a PEFT adapter for the ORIGINAL base (algorithm.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportForm {
    /// B₀A₀ = 0 and W unchanged: the trained factors as they are (rank r).
    Native,
    /// W became W − s·B₀A₀: `[A; A₀]` and `[B, −B₀]` at rank 2r, alpha scaled to keep s.
    Doubled,
    /// W became W − s·B₀A₀ but A = A₀ stayed frozen: `ΔW = s·(B − B₀)·A₀` at rank r.
    FrozenDown,
}

/// Everything about one initialisation method.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The method.
    pub method: InitMethod,
    /// Its name on the command line and in files (`null-v2`).
    pub name: &'static str,
    /// Other names accepted on input.
    pub aliases: &'static [&'static str],
    /// What the page's selector says.
    pub label: &'static str,
    /// One line of help (CLI `--help`, page tooltip).
    pub help: &'static str,
    /// The `linalg::init` formula that computes the factors.
    pub formula: Formula,
    /// Whether activation statistics (calibration text) are needed.
    pub needs_calibration: bool,
    /// Whether initialisation replaces W by a residual.
    pub changes_base: bool,
    /// How the trained adapter is exported.
    pub export: ExportForm,
    /// Whether the down projection A trains (LoRA-Null v2 freezes it).
    pub trains_down: bool,
}

/// The table, in the order the page and the help list the methods.
pub const METHODS: [MethodSpec; 10] = [
    MethodSpec {
        method: InitMethod::Null,
        name: "null",
        aliases: &["lora-null", "null-v1"],
        label: "LoRA-Null v1",
        help: "LoRA-Null v1: W·P·Pᵀ (P = the r smallest eigenvectors of C) moves into the adapter; both factors train",
        formula: Formula::Null,
        needs_calibration: true,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::NullV2,
        name: "null-v2",
        aliases: &["lora-null-v2"],
        label: "LoRA-Null v2 (down projection frozen)",
        help: "LoRA-Null v2: the same initialisation, the down projection A stays frozen",
        formula: Formula::Null,
        needs_calibration: true,
        changes_base: true,
        export: ExportForm::FrozenDown,
        trains_down: false,
    },
    MethodSpec {
        method: InitMethod::NullZero,
        name: "null-zero",
        aliases: &[],
        label: "LoRA-Null zero-B",
        help: "A = Pᵀ (the null space of the activations), B = 0, W unchanged",
        formula: Formula::NullZero,
        needs_calibration: true,
        changes_base: false,
        export: ExportForm::Native,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::Lora,
        name: "lora",
        aliases: &[],
        label: "LoRA (PEFT default)",
        help: "PEFT's default: A ~ U(−1/√n, 1/√n), B = 0",
        formula: Formula::Kaiming,
        needs_calibration: false,
        changes_base: false,
        export: ExportForm::Native,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::Gaussian,
        name: "gaussian",
        aliases: &[],
        label: "LoRA (Gaussian A)",
        help: "A ~ N(0, 1/r²), B = 0",
        formula: Formula::Gaussian,
        needs_calibration: false,
        changes_base: false,
        export: ExportForm::Native,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::Pissa,
        name: "pissa",
        aliases: &[],
        label: "PiSSA",
        help: "PiSSA: the top r singular triplets of W move into the adapter",
        formula: Formula::Svd(Pick::Top),
        needs_calibration: false,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::Milora,
        name: "milora",
        aliases: &[],
        label: "MiLoRA",
        help: "MiLoRA: the bottom r singular triplets of W move into the adapter",
        formula: Formula::Svd(Pick::Bottom),
        needs_calibration: false,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::Olora,
        name: "olora",
        aliases: &[],
        label: "OLoRA",
        help: "OLoRA: QR of W, B = Q[:, :r], A = R[:r]",
        formula: Formula::Olora,
        needs_calibration: false,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::CordaKpm,
        name: "corda-kpm",
        aliases: &["corda"],
        label: "CorDA KPM",
        help: "CorDA knowledge-preserved: the bottom r triplets of SVD(W·C)",
        formula: Formula::Corda(Pick::Bottom),
        needs_calibration: true,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
    MethodSpec {
        method: InitMethod::CordaIpm,
        name: "corda-ipm",
        aliases: &[],
        label: "CorDA IPM",
        help: "CorDA instruction-previewed: the top r triplets of SVD(W·C)",
        formula: Formula::Corda(Pick::Top),
        needs_calibration: true,
        changes_base: true,
        export: ExportForm::Doubled,
        trains_down: true,
    },
];

impl InitMethod {
    /// Every method, in the table's order.
    pub const ALL: [InitMethod; 10] = [
        METHODS[0].method,
        METHODS[1].method,
        METHODS[2].method,
        METHODS[3].method,
        METHODS[4].method,
        METHODS[5].method,
        METHODS[6].method,
        METHODS[7].method,
        METHODS[8].method,
        METHODS[9].method,
    ];

    /// This method's row of [`METHODS`].
    pub fn spec(self) -> &'static MethodSpec {
        METHODS
            .iter()
            .find(|m| m.method == self)
            .expect("invariant: every method has a row in METHODS")
    }

    /// The CLI name (`null-v2`, ...).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Whether activation statistics (calibration text) are needed.
    pub fn needs_calibration(self) -> bool {
        self.spec().needs_calibration
    }

    /// Whether the method moves part of W into the adapter (so the base becomes a residual).
    pub fn changes_base(self) -> bool {
        self.spec().changes_base
    }

    /// Whether the down projection A is trained (LoRA-Null-v2 freezes it).
    pub fn trains_down(self) -> bool {
        self.spec().trains_down
    }
}

impl std::str::FromStr for InitMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        METHODS
            .iter()
            .find(|m| m.name == norm || m.aliases.contains(&norm.as_str()))
            .map(|m| m.method)
            .ok_or_else(|| {
                let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
                format!("unknown method `{s}`; use one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::jobs::Statistic;

    #[test]
    fn every_method_has_one_row_consistent_with_its_formula() {
        for m in InitMethod::ALL {
            let spec = m.spec();
            assert_eq!(METHODS.iter().filter(|x| x.method == m).count(), 1, "{m:?}");
            assert_eq!(
                spec.needs_calibration,
                spec.formula.statistic() != Statistic::None,
                "{}: calibration need must follow the formula",
                spec.name
            );
            assert_eq!(spec.changes_base, spec.formula.changes_base(), "{}", spec.name);
            let export = match (spec.changes_base, spec.trains_down) {
                (false, _) => ExportForm::Native,
                (true, true) => ExportForm::Doubled,
                (true, false) => ExportForm::FrozenDown,
            };
            assert_eq!(spec.export, export, "{}: export form", spec.name);
            assert_eq!(spec.name.parse::<InitMethod>(), Ok(m));
            for alias in spec.aliases {
                assert_eq!(alias.parse::<InitMethod>(), Ok(m));
            }
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", spec.name), "serde name = table name");
        }
        assert!("lora-x".parse::<InitMethod>().unwrap_err().contains("null-v2"));
        assert_eq!("LoRA_Null".parse::<InitMethod>(), Ok(InitMethod::Null));
    }
}
