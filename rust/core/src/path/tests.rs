//! Unit and property tests for request path normalization.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

#[test]
fn plain_paths_are_borrowed() {
    for p in [
        "/",
        "/items",
        "/items/",
        "/items/1/x.json",
        "//double",
        "/a.b/.c/..d/...",
        "/é/ü",
    ] {
        match normalize(p) {
            Ok(Cow::Borrowed(b)) => assert_eq!(b, p),
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn escapes_are_decoded() {
    let cases = [
        ("/a%20b", "/a b"),
        ("/%41%62%63", "/Abc"),
        ("/caf%C3%A9", "/café"),
        ("/caf%c3%a9", "/café"),
        ("/a%2Eb", "/a.b"),
        ("/%2e%2e%2e", "/..."),
        ("/x/%3F%23", "/x/?#"),
    ];
    for (input, want) in cases {
        match normalize(input) {
            Ok(Cow::Owned(got)) => assert_eq!(got, want, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn refusals() {
    let cases = [
        ("", "path does not start with /"),
        ("items", "path does not start with /"),
        ("*", "path does not start with /"),
        ("%2Fitems", "path does not start with /"),
        ("/items/../admin", "dot segment in path"),
        ("/items/./x", "dot segment in path"),
        ("/..", "dot segment in path"),
        ("/.", "dot segment in path"),
        ("/items/..", "dot segment in path"),
        ("/items/%2e%2e/admin", "dot segment in path"),
        ("/items/%2E%2E/admin", "dot segment in path"),
        ("/items/.%2e/admin", "dot segment in path"),
        ("/items/%2e/admin", "dot segment in path"),
        ("/items%2Fadmin", "encoded slash in path"),
        ("/items%2fadmin", "encoded slash in path"),
        ("/items/%2e%2e%2fadmin", "encoded slash in path"),
        ("/a\\b", "backslash in path"),
        ("/a/..\\b", "backslash in path"),
        ("/a%5Cb", "encoded backslash in path"),
        ("/a%5cb", "encoded backslash in path"),
        ("/a%00b", "NUL in path"),
        ("/a\0b", "NUL in path"),
        ("/a%", "malformed percent-escape in path"),
        ("/a%2", "malformed percent-escape in path"),
        ("/a%zz", "malformed percent-escape in path"),
        ("/a%+1", "malformed percent-escape in path"),
        ("/a%%41", "malformed percent-escape in path"),
        ("/a%C3", "invalid UTF-8 in path"),
        ("/a%FF", "invalid UTF-8 in path"),
        ("/a%C0%AF", "invalid UTF-8 in path"),
        // Servlet path parameters: Tomcat serves /public/..;/admin as /admin.
        ("/public/..;/admin", "semicolon in path"),
        ("/public/%2e%2e;/admin", "semicolon in path"),
        ("/admin/users;.json", "semicolon in path"),
        ("/admin/users%3b.json", "semicolon in path"),
        ("/admin/users%3B.json", "semicolon in path"),
        // Double encoding: an upstream that decodes again would see %2e%2e as "..".
        ("/public/%252e%252e/admin", "encoded percent sign in path"),
        ("/100%25", "encoded percent sign in path"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize(input), Err(want), "{input:?}");
    }
}

proptest! {
    #[test]
    fn never_panics_and_output_is_safe(s in "[/a.%2eEfF5c0;3bB\\\\]{0,24}") {
        if let Ok(out) = normalize(&s) {
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.contains('\\') && !out.contains('\0') && !out.contains(';'));
            prop_assert!(out.split('/').all(|seg| seg != "." && seg != ".."));
            prop_assert_eq!(out.matches('/').count(), s.matches('/').count());
            if !s.contains('%') {
                prop_assert!(matches!(out, Cow::Borrowed(_)));
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,40}") {
        let _ = normalize(&s);
    }
}
