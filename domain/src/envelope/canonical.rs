//! The canonical JSON writer: sorted keys, no whitespace, integers only (the format is specified
//! in the module doc of [`crate::envelope`]). Written by hand over `serde_json::Value` so that no
//! serde_json feature (such as `preserve_order`) can change the bytes that are hashed.

use serde_json::Value;

/// An event that has no canonical encoding, so it can be neither hashed nor verified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Floats have no canonical text (`1.0`, `1e0`, `1.00` are one number), so they are refused;
    /// write amounts as integers of the smallest unit. `path` is a JSON Pointer (RFC 6901).
    #[error("the number at {path} is not an integer: floats have no canonical encoding")]
    FloatNotAllowed { path: String },
}

/// Encodes an object given as `(key, value)` entries, in any order.
pub(super) fn encode_object(entries: &mut [(&str, &Value)]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(1024);
    write_object(entries, &mut out).map_err(|innermost_first| EncodeError::FloatNotAllowed {
        path: json_pointer(innermost_first),
    })?;
    Ok(out)
}

/// On a float, the error is the path to it, innermost segment first (built only on failure).
type FloatPath = Vec<String>;

fn write_object(entries: &mut [(&str, &Value)], out: &mut Vec<u8>) -> Result<(), FloatPath> {
    entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(value, out).map_err(|mut path| {
            path.push((*key).to_owned());
            path
        })?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), FloatPath> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            let text = if let Some(u) = n.as_u64() {
                u.to_string()
            } else if let Some(i) = n.as_i64() {
                i.to_string()
            } else {
                return Err(Vec::new());
            };
            out.extend_from_slice(text.as_bytes());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out).map_err(|mut path| {
                    path.push(i.to_string());
                    path
                })?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&str, &Value)> =
                map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            write_object(&mut entries, out)?;
        }
    }
    Ok(())
}

/// Writes `s` quoted and escaped as serde_json does: `"` and `\` with a backslash; U+0008,
/// U+0009, U+000A, U+000C, U+000D as `\b \t \n \f \r`; other U+0000..U+001F as `\u00xx` in
/// lowercase hex; everything else (including `/`, U+007F and non-ASCII) as raw UTF-8.
pub(super) fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut unescaped_from = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            // Bytes of multi-byte UTF-8 characters are all >= 0x80 and pass through here.
            _ => continue,
        };
        out.extend_from_slice(&bytes[unescaped_from..i]);
        if short.is_empty() {
            let hex = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0x0f)],
            ];
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(short);
        }
        unescaped_from = i + 1;
    }
    out.extend_from_slice(&bytes[unescaped_from..]);
    out.push(b'"');
}

/// RFC 6901: `/`-separated segments, `~` written `~0` and `/` written `~1`.
fn json_pointer(innermost_first: FloatPath) -> String {
    innermost_first
        .iter()
        .rev()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::any_text;
    use proptest::prelude::*;
    use serde_json::json;

    fn encode(value: &Value) -> Result<String, EncodeError> {
        let mut entries = [("v", value)];
        let bytes = encode_object(&mut entries)?;
        Ok(String::from_utf8(bytes).expect("canonical bytes are UTF-8"))
    }

    #[test]
    fn entry_order_does_not_change_the_bytes() {
        let (one, two, three) = (json!(1), json!([2]), json!({"z": 3, "y": 4}));
        let mut forward = [("a", &one), ("b", &two), ("c", &three)];
        let mut backward = [("c", &three), ("b", &two), ("a", &one)];
        let expected = br#"{"a":1,"b":[2],"c":{"y":4,"z":3}}"#.to_vec();
        assert_eq!(encode_object(&mut forward), Ok(expected.clone()));
        assert_eq!(encode_object(&mut backward), Ok(expected));
    }

    #[test]
    fn keys_sort_by_utf8_bytes_not_by_utf16_or_case() {
        // U+FF61 sorts after U+1F600 in UTF-16 but before it in UTF-8; `B` sorts before `a`.
        let value = json!({"\u{1F600}": 1, "\u{FF61}": 2, "a": 3, "B": 4, "": 5, "aa": 6});
        assert_eq!(
            encode(&value).unwrap(),
            "{\"v\":{\"\":5,\"B\":4,\"a\":3,\"aa\":6,\"\u{FF61}\":2,\"\u{1F600}\":1}}"
        );
    }

    #[test]
    fn integers_at_the_limits_are_written_in_plain_decimal() {
        let value = json!([u64::MAX, i64::MIN, 0, -1]);
        assert_eq!(
            encode(&value).unwrap(),
            r#"{"v":[18446744073709551615,-9223372036854775808,0,-1]}"#
        );
    }

    #[test]
    fn a_float_anywhere_is_refused_with_its_path() {
        let value = json!({"items": [{"qty": 2}, {"a/b~c": 1.0}]});
        assert_eq!(
            encode(&value),
            Err(EncodeError::FloatNotAllowed {
                path: "/v/items/1/a~1b~0c".to_owned()
            })
        );
        let negative_zero: Value = serde_json::from_str("-0").unwrap();
        assert!(encode(&negative_zero).is_err(), "-0 parses as a float");
    }

    proptest! {
        #[test]
        fn strings_are_escaped_exactly_as_serde_json_escapes_them(s in any_text()) {
            let mut ours = Vec::new();
            write_string(&s, &mut ours);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }
}
