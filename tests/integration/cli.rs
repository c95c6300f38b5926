//! The CLI contract: output shapes, exit codes, one-line errors.

use std::process::Command;

use crate::common::*;

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lora-null"))
        .args(args)
        .output()
        .expect("run lora-null");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn eval_prints_one_json_object_with_perplexity_tokens_and_seconds() {
    let model = fixture("tiny/llama");
    let text = fixture("smollm2/ppl_text.txt");
    let (code, out, err) = cli(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--seq-len",
        "64",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["perplexity"].as_f64().unwrap() > 1.0);
    assert!(v["tokens"].as_u64().unwrap() > 100);
    // Tokenising and scoring a few hundred tokens takes real, finite time.
    let seconds = v["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0 && seconds < 600.0, "seconds = {seconds}");
}

#[test]
fn bad_input_exits_non_zero_with_one_line_on_stderr() {
    let dir = std::env::temp_dir().join(format!("lora-null-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0\x05").unwrap();
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00]).unwrap();
    for args in [
        vec!["generate", "--model", bad.to_str().unwrap(), "--prompt", "hi"],
        vec!["generate", "--model", "/nonexistent/model.gguf", "--prompt", "hi"],
        vec![
            "eval",
            "--model",
            fixture("tiny/llama").to_str().unwrap(),
            "--text",
            binary.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ] {
        let (code, out, err) = cli(&args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(out.is_empty(), "{args:?} printed on stdout: {out}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one error line, got {err}");
    }
    let (_, _, err) = cli(&[
        "generate",
        "--model",
        bad.to_str().unwrap(),
        "--prompt",
        "hi",
        "--device",
        "cpu",
    ]);
    assert!(err.contains("truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_applies_an_adapter_directory() {
    let dir = std::env::temp_dir().join(format!("lora-null-adapter-{}", std::process::id()));
    let model = fixture("tiny/llama");
    let calib = fixture("smollm2/ppl_text.txt");
    let (code, _, err) = cli(&[
        "init",
        "--model",
        model.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--method",
        "null",
        "--rank",
        "4",
        "--samples",
        "4",
        "--seq-len",
        "32",
        "--device",
        "cpu",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let adapter = dir.join("init_adapter");
    let residual = dir.join("residual_model");
    assert!(adapter.join("adapter_model.safetensors").exists() && residual.join("model.safetensors").exists());
    let base = cli(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
    ]);
    let with = cli(&[
        "generate",
        "--model",
        residual.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
    ]);
    assert_eq!(base.0, 0, "{}", base.2);
    assert_eq!(with.0, 0, "{}", with.2);
    assert_eq!(with.1, base.1, "residual + init adapter must generate like the base");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_run_names_the_flags_to_change_and_keeps_the_last_good_state() {
    let dir = std::env::temp_dir().join(format!("lora-null-diverge-{}", std::process::id()));
    let model = fixture("tiny/llama");
    let data = fixture("e2e/train.jsonl");
    let (code, out, err) = cli(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--rank",
        "4",
        "--lr",
        "1e30",
        "--steps",
        "20",
        "--warmup-ratio",
        "0",
        "--device",
        "cpu",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "lr 1e30 must diverge: {out}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains("training diverged"), "{err}");
    assert!(
        line.contains("lower --lr, or raise --grad-accum"),
        "the CLI words the hints as flags: {line}"
    );
    assert!(dir.join("checkpoints/last-good.safetensors").exists(), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_method_that_needs_statistics_without_calibration_text_names_the_flag() {
    let (code, _, err) = cli(&[
        "init",
        "--model",
        fixture("tiny/llama").to_str().unwrap(),
        "--method",
        "null",
        "--out",
        std::env::temp_dir().join("lora-null-never-written").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("needs") || err.contains("statistics"), "{err}");
    assert!(err.contains("pass --calib FILE"), "{err}");
}
