//! The small expression language of runbooks: `${step.field}` references to earlier
//! outputs, and comparisons such as `"${restore.files} >= 1"` (assert `that`) or `"> 0"`
//! (sql `expect`). Values compare as numbers when both sides are numbers, else as text.

use std::collections::BTreeMap;

/// The comparison operators, longest first so `>=` is found before `>`.
const OPS: &[&str] = &["==", "!=", ">=", "<=", "=", ">", "<"];

/// Every `${step.field}` in `text`, as (step, field).
pub fn references(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if let Some((step, field)) = inner.split_once('.') {
            out.push((step.to_string(), field.to_string()));
        }
        rest = &after[end + 1..];
    }
    out
}

/// `text` with every `${step.field}` replaced from `outputs` (keyed `step.field`); an unknown
/// reference is an error naming it.
pub fn interpolate(text: &str, outputs: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in {text:?}"));
        };
        let key = &after[..end];
        match outputs.get(key) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "${{{key}}}: no such output (has that step run, and does it record `{}`?)",
                    key.split_once('.').map(|(_, f)| f).unwrap_or(key)
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An `expect`: `"OP VALUE"` or just `"VALUE"` (equality). Returns (op, value).
pub fn parse_expect(text: &str) -> Result<(&'static str, String), String> {
    let t = text.trim();
    for op in OPS {
        if let Some(v) = t.strip_prefix(op) {
            return Ok((normal(op), v.trim().to_string()));
        }
    }
    if t.is_empty() {
        return Err("empty: give a value, or an operator and a value such as \"> 0\"".into());
    }
    Ok(("==", t.to_string()))
}

/// A comparison `"LEFT OP RIGHT"`. Returns (left, op, right).
pub fn parse_comparison(text: &str) -> Result<(String, &'static str, String), String> {
    // The operator outside of any ${…}.
    let masked = mask_refs(text);
    for op in OPS {
        if let Some(at) = masked.find(op) {
            let left = text[..at].trim();
            let right = text[at + op.len()..].trim();
            if left.is_empty() || right.is_empty() {
                break;
            }
            return Ok((left.to_string(), normal(op), right.to_string()));
        }
    }
    Err(format!(
        "{text:?}: expected LEFT OP RIGHT with OP one of == != >= <= > <, e.g. \"${{restore.files}} >= 1\""
    ))
}

fn mask_refs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !depth && bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth = true;
        }
        out.push(if depth { '_' } else { bytes[i] as char });
        if depth && bytes[i] == b'}' {
            depth = false;
        }
        i += 1;
    }
    out
}

fn normal(op: &str) -> &'static str {
    match op {
        "=" | "==" => "==",
        "!=" => "!=",
        ">=" => ">=",
        "<=" => "<=",
        ">" => ">",
        _ => "<",
    }
}

/// Whether `left OP right` holds.
pub fn holds(left: &str, op: &str, right: &str) -> bool {
    let (l, r) = (left.trim(), right.trim());
    let ord = match (l.parse::<f64>(), r.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b),
        _ => Some(l.cmp(r)),
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match op {
        "==" => ord == Equal,
        "!=" => ord != Equal,
        ">=" => ord != Less,
        "<=" => ord != Greater,
        ">" => ord == Greater,
        _ => ord == Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_interpolation() {
        let refs = references("a ${x.files} b ${drill.id}");
        assert_eq!(
            refs,
            vec![("x".into(), "files".into()), ("drill".into(), "id".into())]
        );
        let mut out = BTreeMap::new();
        out.insert("x.files".to_string(), "3".to_string());
        assert_eq!(interpolate("n=${x.files}", &out).unwrap(), "n=3");
        assert!(interpolate("${x.bytes}", &out)
            .unwrap_err()
            .contains("x.bytes"));
    }

    #[test]
    fn comparisons() {
        assert_eq!(
            parse_comparison("${r.files} >= 1").unwrap(),
            ("${r.files}".into(), ">=", "1".into())
        );
        assert!(parse_comparison("just text").is_err());
        assert_eq!(parse_expect("> 0").unwrap(), (">", "0".into()));
        assert_eq!(parse_expect("42").unwrap(), ("==", "42".into()));
        assert!(holds("10", ">", "9"));
        assert!(!holds("10", "<", "9"));
        assert!(holds("abc", "==", "abc"));
        assert!(holds("2.0", "==", "2"));
    }
}
