//! Dataset files: plain text, JSON Lines / JSON arrays with a `"text"` field or instruction
//! records, and CSV with the same column names. Parsing is pure; errors name the file and line.

use serde_json::Value;

use super::tokenizer::ChatMessage;

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Plain text (language modelling; every token is a target).
    Text(String),
    /// A prompt and its response (loss on the response only).
    Instruction {
        /// The instruction (with its optional input), before formatting.
        instruction: String,
        /// Optional extra input (Alpaca's `input`).
        input: String,
        /// The response.
        output: String,
    },
    /// A prompt/completion pair used verbatim (loss on the completion).
    Completion {
        /// Prompt text.
        prompt: String,
        /// Completion text.
        completion: String,
    },
    /// A conversation rendered with the model's chat template (loss on the last assistant turn).
    Chat(Vec<ChatMessage>),
}

/// Errors reading a dataset; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Nothing in the file.
    #[error("{file}: the dataset is empty; give at least one example")]
    Empty {
        /// File name.
        file: String,
    },
    /// Not UTF-8.
    #[error("{file}: not UTF-8 text (invalid byte at offset {offset}); convert the file to UTF-8")]
    NotUtf8 {
        /// File name.
        file: String,
        /// First bad byte.
        offset: usize,
    },
    /// A line or record is malformed.
    #[error("{file}:{line}: {message}")]
    Bad {
        /// File name.
        file: String,
        /// 1-based line (or record number for JSON arrays).
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The extension is not one we read.
    #[error("{file}: unknown dataset format; use .txt, .jsonl, .json or .csv")]
    UnknownFormat {
        /// File name.
        file: String,
    },
}

const FIELDS_HINT: &str = "expected a \"text\" field, \"instruction\"/\"output\" (optional \"input\"), \"prompt\"/\"completion\", or \"messages\"";

/// Parses a dataset file by its extension.
pub fn parse_dataset(file: &str, bytes: &[u8]) -> Result<Vec<Record>, DatasetError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DatasetError::NotUtf8 {
        file: file.to_string(),
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lower = file.to_ascii_lowercase();
    let records = if lower.ends_with(".txt") || lower.ends_with(".md") {
        if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![Record::Text(text.to_string())]
        }
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        parse_jsonl(file, text)?
    } else if lower.ends_with(".json") {
        parse_json_array(file, text)?
    } else if lower.ends_with(".csv") {
        parse_csv(file, text)?
    } else {
        return Err(DatasetError::UnknownFormat { file: file.to_string() });
    };
    if records.is_empty() {
        return Err(DatasetError::Empty { file: file.to_string() });
    }
    Ok(records)
}

fn parse_jsonl(file: &str, text: &str) -> Result<Vec<Record>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DatasetError::Bad {
            file: file.to_string(),
            line: i + 1,
            message,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("bad JSON: {e}")))?;
        out.push(record_from_json(&v).map_err(bad)?);
    }
    Ok(out)
}

fn parse_json_array(file: &str, text: &str) -> Result<Vec<Record>, DatasetError> {
    let v: Value = serde_json::from_str(text).map_err(|e| DatasetError::Bad {
        file: file.to_string(),
        line: e.line(),
        message: format!("bad JSON: {e}"),
    })?;
    let items = match v {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(DatasetError::Bad {
                file: file.to_string(),
                line: 1,
                message: "expected a JSON array of records (or use .jsonl, one record per line)".into(),
            });
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            record_from_json(v).map_err(|message| DatasetError::Bad {
                file: file.to_string(),
                line: i + 1,
                message: format!("record {}: {message}", i + 1),
            })
        })
        .collect()
}

fn string_field(v: &Value, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field \"{key}\" must be a string, found {other}")),
    }
}

/// One record from a JSON object.
pub fn record_from_json(v: &Value) -> Result<Record, String> {
    if !v.is_object() {
        return Err(format!("expected a JSON object; {FIELDS_HINT}"));
    }
    if let Some(messages) = v.get("messages") {
        let msgs: Vec<ChatMessage> = serde_json::from_value(messages.clone())
            .map_err(|e| format!("\"messages\" must be a list of {{\"role\", \"content\"}} objects: {e}"))?;
        if msgs.is_empty() {
            return Err("\"messages\" is empty".into());
        }
        return Ok(Record::Chat(msgs));
    }
    if let Some(instruction) = string_field(v, "instruction")? {
        let output = string_field(v, "output")?
            .or(string_field(v, "response")?)
            .ok_or("instruction record without \"output\" (or \"response\")")?;
        return Ok(Record::Instruction {
            instruction,
            input: string_field(v, "input")?.unwrap_or_default(),
            output,
        });
    }
    if let Some(prompt) = string_field(v, "prompt")? {
        let completion = string_field(v, "completion")?.ok_or("prompt record without \"completion\"")?;
        return Ok(Record::Completion { prompt, completion });
    }
    if let Some(text) = string_field(v, "text")? {
        return Ok(Record::Text(text));
    }
    Err(format!("no known field; {FIELDS_HINT}"))
}

/// Splits CSV text into records of fields (RFC 4180 quoting: `"a ""b"" c"`, embedded newlines).
/// A CSV row with the 1-based line it starts on.
type CsvRow = (usize, Vec<String>);

fn csv_rows(text: &str) -> Result<Vec<CsvRow>, (usize, String)> {
    let mut rows = Vec::new();
    let (mut field, mut row) = (String::new(), Vec::new());
    let (mut in_quotes, mut line, mut row_line) = (false, 1usize, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                row.clear();
                line += 1;
                row_line = line;
            }
            (_, ch) => {
                if ch == '\n' {
                    line += 1;
                }
                field.push(ch);
            }
        }
    }
    if in_quotes {
        return Err((row_line, "unterminated quoted field".into()));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

fn parse_csv(file: &str, text: &str) -> Result<Vec<Record>, DatasetError> {
    let bad = |line: usize, message: String| DatasetError::Bad {
        file: file.to_string(),
        line,
        message,
    };
    let rows = csv_rows(text).map_err(|(l, m)| bad(l, m))?;
    let Some(((_, header), body)) = rows.split_first() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    body.iter()
        .map(|(line, fields)| {
            if fields.len() != header.len() {
                return Err(bad(
                    *line,
                    format!("has {} fields but the header has {}", fields.len(), header.len()),
                ));
            }
            let obj: serde_json::Map<String, Value> = header
                .iter()
                .zip(fields)
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            record_from_json(&Value::Object(obj)).map_err(|m| bad(*line, m))
        })
        .collect()
}

/// The Alpaca prompt of the LoRA-Null and CorDA training scripts (algorithm.md §1.6); with a
/// non-empty `input`, Alpaca's own variant with an `### Input:` section.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.is_empty() {
        format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
        )
    } else {
        format!(
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
        )
    }
}
