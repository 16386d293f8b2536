//! PROTOCOL.md and the protocol types stay one to one: every JSON example in the spec reads
//! into the type its section names (with no field the type does not know), and every error
//! code is in the table, spelled as on the wire.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sidecall::client::transfer::FileMsg;
use sidecall::protocol::{
    ClientMsg, ErrorCode, HttpError, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
    ServerMsg, VerificationPending, VerifiedResponse, VerifyRequest, VerifyWaiting,
};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    std::fs::read_to_string(path).expect("PROTOCOL.md")
}

/// Each ```json block with the `##`/`###` headings above it.
fn examples(spec: &str) -> Vec<(String, String, Value)> {
    let (mut h2, mut h3) = (String::new(), String::new());
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in spec.lines() {
        match &mut block {
            Some(b) if line.starts_with("```") => {
                for v in serde_json::Deserializer::from_str(b).into_iter::<Value>() {
                    let v = v.unwrap_or_else(|e| panic!("PROTOCOL.md, {h2} / {h3}: not JSON: {e}\n{b}"));
                    out.push((h2.clone(), h3.clone(), v));
                }
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if line.starts_with("```json") => block = Some(String::new()),
            None if line.starts_with("## ") => (h2, h3) = (line.to_string(), String::new()),
            None if line.starts_with("### ") => h3 = line.to_string(),
            None => {}
        }
    }
    out
}

/// Every key of `doc` is in `ours` (recursively): the spec names no field the type lacks.
fn keys_known(doc: &Value, ours: &Value, at: &str) -> Result<(), String> {
    match (doc, ours) {
        (Value::Object(d), Value::Object(o)) => {
            for (k, v) in d {
                let Some(ov) = o.get(k) else { return Err(format!("{at}.{k} is not a field of the type")) };
                keys_known(v, ov, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(o)) => {
            d.iter().zip(o).enumerate().try_for_each(|(i, (d, o))| keys_known(d, o, &format!("{at}[{i}]")))
        }
        _ => Ok(()),
    }
}

fn reads_as<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(), String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    keys_known(v, &back, "")
}

#[test]
fn every_json_example_in_the_spec_reads_into_its_type() {
    let spec = spec();
    let all = examples(&spec);
    assert!(all.len() >= 35, "found only {} examples: is the parser still right?", all.len());
    let mut checked = 0;
    for (h2, h3, v) in &all {
        let result = if h2.contains("client → server") {
            reads_as::<ClientMsg>(v)
        } else if h2.contains("server → client") {
            reads_as::<ServerMsg>(v)
        } else if h2.contains("Click-to-call") || h2.contains("Verification") {
            // Messages of both directions, by their `type`.
            reads_as::<ClientMsg>(v).or_else(|e| reads_as::<ServerMsg>(v).map_err(|e2| format!("{e}; {e2}")))
        } else if h2.contains("File transfer") {
            reads_as::<FileMsg>(v)
        } else if h2.contains("HTTP API") {
            // Requests and answers of one endpoint share a section: one of them must fit.
            let tries = [
                reads_as::<RegisterRequest>(v),
                reads_as::<RegisterResponse>(v),
                reads_as::<LoginRequest>(v),
                reads_as::<LoginResponse>(v),
                reads_as::<HttpError>(v),
                reads_as::<VerificationPending>(v),
                reads_as::<VerifyRequest>(v),
                reads_as::<VerifiedResponse>(v),
                reads_as::<VerifyWaiting>(v),
            ];
            match tries.iter().find(|r| r.is_ok()) {
                Some(_) => Ok(()),
                None => Err(format!("{tries:?}")),
            }
        } else {
            Err("a JSON example in a section with no protocol type".to_string())
        };
        if let Err(e) = result {
            panic!("PROTOCOL.md, {h2} / {h3}: {v}\ndoes not read into its type: {e}");
        }
        checked += 1;
    }
    // Each message type of both directions has an example.
    for (dir, ty) in [
        ("client → server", "hello"),
        ("client → server", "access_request"),
        ("server → client", "session_started"),
    ] {
        assert!(
            all.iter().any(|(h2, _, v)| h2.contains(dir) && v["type"] == ty),
            "no example of {ty} ({dir})"
        );
    }
    println!("{checked} JSON examples read into their types");
}

/// Spec examples that are not the types' own fail the check above (it can fail).
#[test]
fn the_example_check_catches_an_unknown_field_and_a_wrong_type() {
    let typo: Value = serde_json::json!({"type": "answer", "session_id": "s", "accept": true, "acept": 1});
    assert!(reads_as::<ClientMsg>(&typo).is_err());
    let wrong: Value = serde_json::json!({"type": "no_such_message"});
    assert!(reads_as::<ClientMsg>(&wrong).is_err());
}

#[test]
fn every_error_code_is_in_the_spec_table_as_on_the_wire() {
    let spec = spec();
    let table: Vec<String> = spec
        .split("## Error codes")
        .nth(1)
        .expect("an error code section")
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let ours: Vec<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_string()).collect();
    assert_eq!(table, ours, "PROTOCOL.md's table and ErrorCode::ALL differ");
    for code in ErrorCode::ALL {
        let wire = serde_json::to_string(&code).expect("serialize");
        assert_eq!(wire, format!("\"{}\"", code.as_str()));
        assert_eq!(serde_json::from_str::<ErrorCode>(&wire).expect("parse"), code);
        assert_eq!(code.to_string(), code.as_str());
    }
    // ALL is complete: a code outside it would not parse from the table's spelling.
    let distinct: std::collections::HashSet<_> = ErrorCode::ALL.iter().collect();
    assert_eq!(distinct.len(), ErrorCode::ALL.len());
}
