use std::borrow::Cow;

use serde_json::json;

use super::{Json, JsonObject, MAX_DEPTH, parse_object};
use crate::error::TokenError;

/// The error detail of a refused document (panics if it was accepted).
fn refused(input: &str) -> String {
    match parse_object(input.as_bytes(), "payload") {
        Err(TokenError::BadJson { segment, detail }) => {
            assert_eq!(segment, "payload");
            detail
        }
        other => panic!("{input:?} gave {other:?}"),
    }
}

/// `depth` nested arrays inside a top-level object (total nesting `depth + 1`).
fn nested(depth: usize) -> String {
    format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn parses_an_object_into_the_values_serde_json_reads() {
    let doc = br#" {"s":"x\u00e9","n":-1,"f":1.5,"b":true,"z":null,"a":[1,{"k":[]}],"o":{}} "#;
    let want = json!({"s":"x\u{e9}","n":-1,"f":1.5,"b":true,"z":null,"a":[1,{"k":[]}],"o":{}});
    assert_eq!(
        serde_json::Value::Object(parse_object(doc, "p").unwrap().into_serde()),
        want
    );
    // Reading a serde_json value gives the same object.
    let map = want.as_object().unwrap();
    assert_eq!(parse_object(doc, "p").unwrap(), JsonObject::from(map));
    assert!(parse_object(b"{}", "p").unwrap().is_empty());
    assert_eq!(
        parse_object(br#"{"big":18446744073709551615}"#, "p")
            .unwrap()
            .get("big"),
        Some(&Json::Number(u64::MAX.into()))
    );
}

#[test]
fn strings_borrow_from_the_input_unless_escaped() {
    let doc = br#"{"plain":"abc","escaped":"a\"c","list":["x"],"\u006bey":1}"#;
    let o = parse_object(doc, "p").unwrap();
    assert!(matches!(
        o.get("plain"),
        Some(Json::String(Cow::Borrowed("abc")))
    ));
    assert!(matches!(o.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\"c"));
    assert_eq!(
        o.get("list"),
        Some(&Json::Array(vec![Json::String("x".into())]))
    );
    // An escaped key is found by its decoded name.
    assert_eq!(o.get("key"), Some(&Json::Number(1.into())));
}

#[test]
fn members_are_found_and_removed_by_key_whatever_their_order() {
    let mut o = parse_object(br#"{"z":1,"a":2,"m":{"y":3,"b":4},"aa":0}"#, "p").unwrap();
    assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "m", "z", "aa"]);
    assert_eq!(o.get("z"), Some(&Json::Number(1.into())));
    let m = o.get("m").and_then(Json::as_object).unwrap();
    assert_eq!(m.get("b"), Some(&Json::Number(4.into())));
    assert_eq!(m.get("missing"), None);
    assert_eq!(o.remove("a"), Some(Json::Number(2.into())));
    assert_eq!((o.get("a"), o.len()), (None, 3));
    assert_eq!(o.get("aa"), Some(&Json::Number(0.into())));
    assert_eq!(o.remove("a"), None);
}

#[test]
fn refuses_duplicate_keys_at_any_depth() {
    for input in [
        r#"{"a":1,"a":1}"#,
        r#"{"a":1,"b":2,"a":"x"}"#,
        r#"{"o":{"k":1,"k":2}}"#,
        r#"{"l":[{"x":[{"y":1,"y":1}]}]}"#,
        // Escapes are decoded before comparing: "\u0061" is "a".
        r#"{"a":1,"\u0061":2}"#,
    ] {
        assert!(refused(input).starts_with("duplicate key"), "{input}");
    }
    // Same key in sibling objects is fine.
    parse_object(br#"{"x":{"k":1},"y":{"k":1}}"#, "p").unwrap();
}

#[test]
fn refuses_nesting_deeper_than_max_depth() {
    // The top-level object is level 1, so MAX_DEPTH - 1 more containers fit.
    parse_object(nested(MAX_DEPTH - 1).as_bytes(), "p").unwrap();
    assert!(refused(&nested(MAX_DEPTH)).starts_with("nesting deeper than 32"));
    // Far past serde_json's own limit of 128: still our error, no stack trouble.
    assert!(refused(&nested(10_000)).starts_with("nesting deeper than 32"));
    let objects = format!(
        "{}1{}",
        r#"{"a":"#.repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert!(refused(&objects).starts_with("nesting deeper"));
}

#[test]
fn refuses_non_objects_and_trailing_data() {
    for input in [
        "",
        "  ",
        "[]",
        "[{}]",
        "1",
        "\"s\"",
        "null",
        "true",
        "\u{feff}{}",
    ] {
        assert_eq!(refused(input), "not a JSON object", "{input:?}");
    }
    for input in [r#"{}{}"#, r#"{} x"#, r#"{"a":1},"#, "{}\0"] {
        assert!(
            refused(input).starts_with("trailing characters"),
            "{input:?}"
        );
    }
    parse_object(b"{}\n\t ", "p").unwrap();
}

#[test]
fn refuses_malformed_json() {
    for input in [
        "{",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{a:1}"#,
        r#"{'a':1}"#,
        r#"{"a":01}"#,
        r#"{"a":NaN}"#,
        r#"{"a":1e999}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\ud800"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":[1,]}"#,
    ] {
        refused(input);
    }
    // Not UTF-8.
    assert!(matches!(
        parse_object(b"{\"a\":\"\xff\"}", "header"),
        Err(TokenError::BadJson {
            segment: "header",
            ..
        })
    ));
}

#[test]
fn error_details_never_quote_the_input() {
    let secret = "s3cr3t-token-bytes";
    for input in [
        format!(r#"{{"{secret}":1,"{secret}":2}}"#),
        format!(r#"{{"a":"{secret}"}} {secret}"#),
        format!(r#"{{"a":{secret}}}"#),
        format!(r#"["{secret}"]"#),
        format!(r#"{{"a":"{secret}\q"}}"#),
        format!("{}\"{secret}\"{}", r#"{"a":["#.repeat(40), "]}".repeat(40)),
    ] {
        let detail = refused(&input);
        assert!(!detail.contains(secret), "{detail}");
    }
}
