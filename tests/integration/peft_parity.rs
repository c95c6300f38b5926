//! An adapter written by PEFT itself (scripts/make_reference.py --only peft: random A and B on
//! all 14 modules, one module with its own rank, one with its own alpha) read by our loader and
//! applied to the tiny llama: logits against PEFT's.

use lora_null::model::Target;

use crate::adapters::tiny;
use crate::common::*;

/// Both sides compute the same f32 model in another order (logits of magnitude ~10): ~1e-6 seen;
/// 1e-4 still catches a wrong scale (the patterns move logits by >1e-1).
const PEFT_LOGIT_TOL: f32 = 1e-4;

#[test]
fn an_adapter_written_by_peft_gives_peft_logits() {
    let dir = fixture("tiny/peft");
    let config = std::fs::read(dir.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let r = json("tiny/peft/reference.json");
    let mut m = tiny();
    let base: Vec<_> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| logits_rows(&m, &ids(&c["ids"])))
        .collect();
    let adapter = m.attach_peft(&config, &weights).unwrap();
    assert_eq!(adapter.modules.len(), 14);
    assert_eq!(
        adapter.modules[&(0, Target::V)].a.shape[0],
        2,
        "rank_pattern gives v_proj of layer 0 rank 2"
    );
    let mut worst = 0f32;
    for (case, base) in r["cases"].as_array().unwrap().iter().zip(&base) {
        let ids = ids(&case["ids"]);
        let got = logits_rows(&m, &ids);
        let want = case["logits"].as_array().unwrap();
        let base_want = case["base_logits"].as_array().unwrap();
        assert_eq!(
            (got.len(), want.len(), base_want.len()),
            (ids.len(), ids.len(), ids.len())
        );
        for (pos, ((g, w), (b, bw))) in got.iter().zip(want).zip(base.iter().zip(base_want)).enumerate() {
            let d = max_abs_diff(g, &floats(w));
            worst = worst.max(d);
            assert!(
                d < PEFT_LOGIT_TOL,
                "{} ids, position {pos}: max |Δlogit| vs PEFT = {d}",
                ids.len()
            );
            let db = max_abs_diff(b, &floats(bw));
            assert!(db < PEFT_LOGIT_TOL, "position {pos}: base logits differ by {db}");
        }
    }
    eprintln!("logits against PEFT: max |Δ| = {worst:.1e}");
    let effect = r["max_abs_adapter_effect"].as_f64().unwrap() as f32;
    assert!(
        effect > 1e3 * PEFT_LOGIT_TOL,
        "the adapter must change the logits far beyond the tolerance"
    );
}
