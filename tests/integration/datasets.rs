//! Dataset files: every supported format parses; bad input names the file and line.

use lora_null::hint::{Hint, Setting};
use lora_null::io::dataset::{Record, parse_dataset};
use lora_null::train::TrainConfig;

use crate::adapters::tiny;

fn err(name: &str, text: &str) -> String {
    parse_dataset(name, text.as_bytes()).unwrap_err().to_string()
}

#[test]
fn jsonl_json_csv_and_txt_give_the_same_kinds_of_records() {
    let jsonl = "{\"text\": \"plain\"}\n\n{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}\n{\"prompt\": \"Q\", \"completion\": \"A\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n";
    let recs = parse_dataset("d.jsonl", jsonl.as_bytes()).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0], Record::Text("plain".into()));
    assert!(matches!(&recs[1], Record::Instruction { output, .. } if output == "hi"));
    assert!(matches!(&recs[2], Record::Completion { .. }));
    assert!(matches!(&recs[3], Record::Chat(m) if m.len() == 2));
    let json = r#"[{"instruction": "a", "output": "b"}, {"text": "c"}]"#;
    assert_eq!(parse_dataset("d.json", json.as_bytes()).unwrap().len(), 2);
    let csv = "instruction,input,output\n\"Say \"\"hi\"\"\",,\"hi,\nthere\"\nAdd,1 2,3\n";
    let recs = parse_dataset("d.csv", csv.as_bytes()).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(
        matches!(&recs[0], Record::Instruction { instruction, output, .. } if instruction == "Say \"hi\"" && output == "hi,\nthere")
    );
    assert_eq!(
        parse_dataset("d.txt", b"some text").unwrap(),
        vec![Record::Text("some text".into())]
    );
}

#[test]
fn bad_datasets_name_the_file_and_line() {
    assert_eq!(
        err("d.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n")
            .split(": bad JSON")
            .next()
            .unwrap(),
        "d.jsonl:2"
    );
    assert!(
        err("d.jsonl", "{\"instruction\": \"x\"}\n").starts_with("d.jsonl:1: instruction record without \"output\"")
    );
    assert!(err("d.jsonl", "{\"foo\": 1}\n").contains("d.jsonl:1: no known field"));
    assert!(err("d.jsonl", "\n\n").contains("d.jsonl: the dataset is empty"));
    assert!(err("d.txt", "   \n").contains("the dataset is empty"));
    assert!(err("d.csv", "instruction,output\na,b,c\n").starts_with("d.csv:2: has 3 fields but the header has 2"));
    assert!(err("d.parquet", "x").contains("unknown dataset format"));
    let bytes = [b'{', 0xff, b'}'];
    assert!(
        parse_dataset("d.jsonl", &bytes)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8")
    );
}

#[test]
fn examples_longer_than_max_len_before_their_response_are_reported() {
    let m = tiny();
    let long = Record::Instruction {
        instruction: "word ".repeat(200),
        input: String::new(),
        output: "answer".into(),
    };
    let cfg = TrainConfig {
        max_len: 32,
        val_fraction: 0.0,
        ..TrainConfig::default()
    };
    let e = m.training_data(&[long.clone(), long], &cfg).unwrap_err();
    assert!(
        e.to_string()
            .contains("all 2 examples are longer than the maximum length (32 tokens)"),
        "{e}"
    );
    assert_eq!(e.hints(), vec![Hint::Raise(Setting::MaxLen)]);
}

#[test]
fn instruction_examples_score_only_the_response_plus_eos() {
    let m = tiny();
    let rec = Record::Instruction {
        instruction: "Name a river.".into(),
        input: String::new(),
        output: " Nile".into(),
    };
    let cfg = TrainConfig {
        val_fraction: 0.0,
        ..TrainConfig::default()
    };
    let data = m.training_data(&[rec], &cfg).unwrap();
    let ex = &data.train[0];
    let response = m.tokenizer.encode_raw(" Nile").unwrap().len() + 1;
    assert_eq!(ex.target.iter().filter(|&&t| t).count(), response);
    assert!(ex.target[..ex.ids.len() - response].iter().all(|&t| !t));
    assert_eq!(*ex.ids.last().unwrap(), m.tokenizer.eos_id().unwrap());
}
