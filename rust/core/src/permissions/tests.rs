//! Unit tests for allow-rule compilation and permission checks.

use super::*;
use crate::config::AllowRule;
use crate::roles::{RoleNames, RoleSet};

/// An allow rule.
fn allow(role: &str, methods: &[&str], paths: &[&str]) -> AllowRule {
    AllowRule {
        role: role.into(),
        methods: methods.iter().map(ToString::to_string).collect(),
        paths: paths.iter().map(ToString::to_string).collect(),
    }
}

/// Compiles `rules` against their own role table.
fn compile(rules: &[AllowRule]) -> (RoleNames, Permissions) {
    let names = RoleNames::new(&[], rules);
    let p = Permissions::compile(rules, &names).expect("rules compile");
    (names, p)
}

/// The set of the named roles.
fn set(names: &RoleNames, roles: &[&str]) -> RoleSet {
    let mut s = RoleSet::with_capacity(names.len());
    for r in roles {
        s.insert(names.index(r).expect("known role"));
    }
    s
}

/// The error compiling a single rule.
fn compile_err(rule: AllowRule) -> ConfigError {
    let rules = [allow("ok", &["GET"], &["*"]), rule];
    let names = RoleNames::new(&[], &rules);
    Permissions::compile(&rules, &names).expect_err("rule must be refused")
}

#[test]
fn default_deny() {
    let (names, p) = compile(&[allow("reader", &["GET"], &["/items"])]);
    assert!(!p.allows(&RoleSet::default(), "GET", "/items"));
    assert!(!p.allows(&set(&names, &[]), "GET", "/items"));
    let (names, p) = compile(&[]);
    assert!(!p.allows(&set(&names, &[]), "GET", "/"));
    // A role index the permissions never heard of.
    let mut stranger = RoleSet::default();
    stranger.insert(42);
    assert!(!p.allows(&stranger, "GET", "/"));
}

#[test]
fn exact_prefix_suffix_any() {
    let (names, p) = compile(&[
        allow("exact", &["GET"], &["/items"]),
        allow("prefix", &["GET"], &["/items/*"]),
        allow("suffix", &["GET"], &["*.json"]),
        allow("any", &["GET"], &["*"]),
        allow("root", &["GET"], &["/*"]),
    ]);
    let exact = set(&names, &["exact"]);
    assert!(p.allows(&exact, "GET", "/items"));
    assert!(!p.allows(&exact, "GET", "/items/"));
    assert!(!p.allows(&exact, "GET", "/items/1"));
    assert!(!p.allows(&exact, "GET", "/itemsx"));
    assert!(!p.allows(&exact, "GET", "/Items"), "case-sensitive");

    let prefix = set(&names, &["prefix"]);
    assert!(
        !p.allows(&prefix, "GET", "/items"),
        "prefix does not match the bare directory"
    );
    assert!(p.allows(&prefix, "GET", "/items/"));
    assert!(p.allows(&prefix, "GET", "/items/1"));
    assert!(p.allows(&prefix, "GET", "/items/1/deep/er"));
    assert!(!p.allows(&prefix, "GET", "/items-secret/1"));
    assert!(!p.allows(&prefix, "GET", "/itemsx/1"));
    assert!(!p.allows(&prefix, "GET", "/other/items/1"));

    let suffix = set(&names, &["suffix"]);
    assert!(p.allows(&suffix, "GET", "/a/b.json"));
    assert!(p.allows(&suffix, "GET", "/.json"));
    assert!(!p.allows(&suffix, "GET", "/a/b.json/x"));
    assert!(!p.allows(&suffix, "GET", "/a/bjson"));

    assert!(p.allows(&set(&names, &["any"]), "GET", "/anything/at/all"));
    assert!(p.allows(&set(&names, &["root"]), "GET", "/"));
    assert!(p.allows(&set(&names, &["root"]), "GET", "/x/y"));
}

#[test]
fn methods() {
    let (names, p) = compile(&[
        allow("reader", &["get", "HEAD"], &["/items/*"]),
        allow("writer", &["POST", "*"], &["/items/*"]),
        allow("custom", &["PROPFIND"], &["/dav/*"]),
    ]);
    let reader = set(&names, &["reader"]);
    assert!(
        p.allows(&reader, "GET", "/items/1"),
        "lower-case config is upper-cased"
    );
    assert!(p.allows(&reader, "HEAD", "/items/1"));
    assert!(!p.allows(&reader, "POST", "/items/1"));
    assert!(
        !p.allows(&reader, "get", "/items/1"),
        "request methods are case-sensitive"
    );
    let writer = set(&names, &["writer"]);
    assert!(p.allows(&writer, "DELETE", "/items/1"));
    assert!(p.allows(&writer, "BREW", "/items/1"));
    assert!(!p.allows(&writer, "DELETE", "/other"));
    assert!(p.allows(&set(&names, &["custom"]), "PROPFIND", "/dav/x"));
}

#[test]
fn any_role_in_the_set_may_grant() {
    let (names, p) = compile(&[
        allow("reader", &["GET"], &["/items/*"]),
        allow("writer", &["PUT"], &["/items/*"]),
        allow("reader", &["GET"], &["/docs", "*.md"]),
    ]);
    let both = set(&names, &["reader", "writer"]);
    assert!(p.allows(&both, "GET", "/items/1"));
    assert!(p.allows(&both, "PUT", "/items/1"));
    assert!(p.allows(&both, "GET", "/docs"));
    assert!(p.allows(&both, "GET", "/x/readme.md"));
    assert!(!p.allows(&both, "PUT", "/docs"));
    let writer = set(&names, &["writer"]);
    assert!(!p.allows(&writer, "GET", "/items/1"));
}

#[test]
fn compile_refuses_bad_rules() {
    let cases: Vec<(AllowRule, &str)> = vec![
        (allow("", &["GET"], &["*"]), "allow[1].role"),
        (allow("a,b", &["GET"], &["*"]), "allow[1].role"),
        (allow("r", &[], &["*"]), "allow[1].methods"),
        (allow("r", &["GET", ""], &["*"]), "allow[1].methods[1]"),
        (allow("r", &["GE T"], &["*"]), "allow[1].methods[0]"),
        (allow("r", &["GE*"], &["*"]), "allow[1].methods[0]"),
        (allow("r", &["GÉT"], &["*"]), "allow[1].methods[0]"),
        (allow("r", &["GET"], &[]), "allow[1].paths"),
        (allow("r", &["GET"], &["/ok", ""]), "allow[1].paths[1]"),
        (allow("r", &["GET"], &["items"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["/items*"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["/it*ms"]), "allow[1].paths[0]"),
        (
            allow("r", &["GET"], &["/items/*/edit"]),
            "allow[1].paths[0]",
        ),
        (allow("r", &["GET"], &["/items/**"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["**"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["*.json*"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["*/items/*"]), "allow[1].paths[0]"),
        (
            allow("r", &["GET"], &["/items/../admin"]),
            "allow[1].paths[0]",
        ),
        (allow("r", &["GET"], &["/./*"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["*/../x"]), "allow[1].paths[0]"),
        (allow("r", &["GET"], &["/a\\b"]), "allow[1].paths[0]"),
    ];
    for (bad, at) in cases {
        let e = compile_err(bad);
        assert_eq!(e.at, at, "{e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn patterns_parse_to_expected_kinds() {
    assert_eq!(PathPattern::parse("*"), Ok(PathPattern::Any));
    assert_eq!(PathPattern::parse("/"), Ok(PathPattern::Exact("/".into())));
    assert_eq!(
        PathPattern::parse("/items"),
        Ok(PathPattern::Exact("/items".into()))
    );
    assert_eq!(
        PathPattern::parse("/items/*"),
        Ok(PathPattern::Prefix("/items/".into()))
    );
    assert_eq!(
        PathPattern::parse("/*"),
        Ok(PathPattern::Prefix("/".into()))
    );
    assert_eq!(
        PathPattern::parse("*.json"),
        Ok(PathPattern::Suffix(".json".into()))
    );
    assert_eq!(
        PathPattern::parse("*/edit"),
        Ok(PathPattern::Suffix("/edit".into()))
    );
    assert_eq!(
        PathPattern::parse("*.."),
        Ok(PathPattern::Suffix("..".into())),
        "a segment tail, not a segment"
    );
    assert_eq!(
        PathPattern::parse("/items*"),
        Err(
            "a prefix pattern must end in `/*` (`/items/*` matches below /items; `/items*` is refused)"
        )
    );
}

#[test]
fn methods_dedup_and_star_wins() {
    assert_eq!(
        Methods::compile(&["GET".into(), "get".into()], 0).ok(),
        Some(Methods::Only(vec!["GET".into()].into()))
    );
    assert_eq!(
        Methods::compile(&["GET".into(), "*".into()], 0).ok(),
        Some(Methods::Any)
    );
}
