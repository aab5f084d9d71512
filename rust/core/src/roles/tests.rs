//! Unit tests for role interning, role sets and the claim matcher.

use std::hash::BuildHasher;

use serde_json::{Map, Value, json};

use super::*;
use crate::config::{AllowRule, ClaimCondition, ClaimOp, RoleRule};
use crate::json::JsonObject;

/// A condition `claim op value`.
fn cond(claim: &str, op: ClaimOp, value: &str) -> ClaimCondition {
    ClaimCondition {
        claim: claim.into(),
        op,
        value: value.into(),
    }
}

/// A rule granting `role` when all `when` hold.
fn rule(role: &str, when: Vec<ClaimCondition>) -> RoleRule {
    RoleRule {
        role: role.into(),
        when,
    }
}

/// An allow rule for `role` (methods and paths do not matter here).
fn allow(role: &str) -> AllowRule {
    AllowRule {
        role: role.into(),
        methods: vec!["GET".into()],
        paths: vec!["*".into()],
    }
}

/// A claims object from a JSON literal.
fn claims(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("claims must be an object"),
    }
}

/// Compiles `rules` against their own role table.
fn compile(rules: &[RoleRule]) -> (RoleNames, RoleMatcher) {
    let names = RoleNames::new(rules, &[]);
    let m = RoleMatcher::compile(rules, &names).expect("rules compile");
    (names, m)
}

/// The role names `claims` earn, in index order.
fn roles(names: &RoleNames, m: &RoleMatcher, c: &Value) -> Vec<String> {
    m.roles_for(&JsonObject::from(&claims(c.clone())))
        .iter()
        .map(|i| names.name(i).to_string())
        .collect()
}

/// The `at` of the error compiling `rules`.
fn compile_err(rules: &[RoleRule]) -> ConfigError {
    let names = RoleNames::new(rules, &[]);
    RoleMatcher::compile(rules, &names).expect_err("rules must be refused")
}

#[test]
fn names_interned_in_first_seen_order() {
    let rules = [
        rule("editor", vec![cond("g", ClaimOp::Equals, "e")]),
        rule("admin", vec![cond("g", ClaimOp::Equals, "a")]),
        rule("editor", vec![cond("g", ClaimOp::Equals, "e2")]),
    ];
    let names = RoleNames::new(&rules, &[allow("viewer"), allow("admin"), allow("")]);
    assert_eq!(names.len(), 3);
    assert_eq!(names.index("editor"), Some(0));
    assert_eq!(names.index("admin"), Some(1));
    assert_eq!(names.index("viewer"), Some(2));
    assert_eq!(names.index("nobody"), None);
    assert_eq!(names.index(""), None);
    assert_eq!(&**names.name(2), "viewer");
}

#[test]
fn role_set_basics() {
    let mut s = RoleSet::default();
    assert!(s.is_empty());
    for i in [130, 0, 63, 64, 5] {
        s.insert(i);
    }
    assert!(!s.is_empty());
    assert!(s.contains(0) && s.contains(63) && s.contains(64) && s.contains(130));
    assert!(!s.contains(1) && !s.contains(129) && !s.contains(10_000));
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 130]);

    let mut sized = RoleSet::with_capacity(1000);
    assert!(sized.is_empty());
    assert_eq!(sized.iter().count(), 0);
    sized.insert(3);
    let mut small = RoleSet::default();
    small.insert(3);
    assert_eq!(sized, small, "equality ignores spare capacity");
    let state = std::collections::hash_map::RandomState::new();
    assert_eq!(state.hash_one(&sized), state.hash_one(&small));
}

#[test]
fn auth0_namespaced_claim_is_a_literal_key() {
    let (names, m) = compile(&[rule(
        "admin",
        vec![cond(
            "https://example.com/roles",
            ClaimOp::Contains,
            "admin",
        )],
    )]);
    assert_eq!(
        roles(
            &names,
            &m,
            &json!({"https://example.com/roles": ["user", "admin"]})
        ),
        ["admin"]
    );
    // Not split on dots: the nested form does not count.
    assert!(
        roles(
            &names,
            &m,
            &json!({"https://example": {"com/roles": ["admin"]}})
        )
        .is_empty()
    );
    assert!(roles(&names, &m, &json!({"roles": ["admin"]})).is_empty());
}

#[test]
fn keycloak_nested_path() {
    let (names, m) = compile(&[
        rule(
            "admin",
            vec![cond("realm_access.roles", ClaimOp::Contains, "admin")],
        ),
        rule(
            "billing",
            vec![cond(
                "resource_access.billing-app.roles",
                ClaimOp::Contains,
                "manage",
            )],
        ),
    ]);
    let token = json!({
        "realm_access": {"roles": ["offline_access", "admin"]},
        "resource_access": {"billing-app": {"roles": ["manage"]}},
    });
    assert_eq!(roles(&names, &m, &token), ["admin", "billing"]);
    // A literal dotted top-level key is not a path.
    assert!(roles(&names, &m, &json!({"realm_access.roles": ["admin"]})).is_empty());
    // An intermediate that is not an object ends the path.
    assert!(roles(&names, &m, &json!({"realm_access": ["roles", "admin"]})).is_empty());
    assert!(roles(&names, &m, &json!({"realm_access": "admin"})).is_empty());
}

#[test]
fn has_on_scope_string_and_permissions_array() {
    let (names, m) = compile(&[
        rule("reader", vec![cond("scope", ClaimOp::Has, "items:read")]),
        rule(
            "writer",
            vec![cond("permissions", ClaimOp::Has, "items:write")],
        ),
    ]);
    assert_eq!(
        roles(&names, &m, &json!({"scope": "openid items:read profile"})),
        ["reader"]
    );
    assert_eq!(
        roles(&names, &m, &json!({"scope": "items:read"})),
        ["reader"]
    );
    assert_eq!(
        roles(&names, &m, &json!({"scope": "  items:read  "})),
        ["reader"]
    );
    // Whole words only.
    assert!(roles(&names, &m, &json!({"scope": "items:readonly items:rea"})).is_empty());
    assert!(roles(&names, &m, &json!({"scope": "xitems:read"})).is_empty());
    // Auth0 `permissions` array.
    assert_eq!(
        roles(
            &names,
            &m,
            &json!({"permissions": ["items:read", "items:write"]})
        ),
        ["writer"]
    );
    // Array elements are not split into words.
    assert!(
        roles(
            &names,
            &m,
            &json!({"permissions": ["items:read items:write"]})
        )
        .is_empty()
    );
    assert!(
        roles(
            &names,
            &m,
            &json!({"scope": ["items:read"], "permissions": "items:write"})
        )
        .len()
            == 2
    );
}

#[test]
fn equals_is_not_word_match() {
    let (names, m) = compile(&[rule("r", vec![cond("scope", ClaimOp::Equals, "read")])]);
    assert!(roles(&names, &m, &json!({"scope": "read write"})).is_empty());
    assert_eq!(roles(&names, &m, &json!({"scope": "read"})), ["r"]);
    assert_eq!(
        roles(&names, &m, &json!({"scope": ["write", "read"]})),
        ["r"]
    );
}

#[test]
fn email_suffix_and_prefix() {
    let (names, m) = compile(&[
        rule(
            "staff",
            vec![cond("email", ClaimOp::Suffix, "@example.com")],
        ),
        rule("team", vec![cond("groups", ClaimOp::Prefix, "team-")]),
    ]);
    assert_eq!(
        roles(&names, &m, &json!({"email": "alice@example.com"})),
        ["staff"]
    );
    assert!(roles(&names, &m, &json!({"email": "alice@example.com.evil.org"})).is_empty());
    assert!(roles(&names, &m, &json!({"email": "alice@notexample.com"})).is_empty());
    assert!(roles(&names, &m, &json!({"email": "@example.co"})).is_empty());
    assert_eq!(
        roles(&names, &m, &json!({"groups": ["ops", "team-blue"]})),
        ["team"]
    );
    assert_eq!(roles(&names, &m, &json!({"groups": "team-"})), ["team"]);
    assert!(roles(&names, &m, &json!({"groups": ["ops", "my-team-blue"]})).is_empty());
    // Multi-byte strings: a cut inside a character is no match, not a panic.
    assert!(roles(&names, &m, &json!({"email": "é", "groups": ["é"]})).is_empty());
}

#[test]
fn affix_uses_every_configured_length() {
    let (names, m) = compile(&[
        rule("a", vec![cond("email", ClaimOp::Suffix, ".com")]),
        rule(
            "b",
            vec![cond("email", ClaimOp::Suffix, "@corp.example.com")],
        ),
        rule("c", vec![cond("email", ClaimOp::Suffix, "m")]),
        rule("d", vec![cond("email", ClaimOp::Prefix, "al")]),
        rule("e", vec![cond("email", ClaimOp::Prefix, "alice@")]),
    ]);
    assert_eq!(
        roles(&names, &m, &json!({"email": "alice@corp.example.com"})),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(roles(&names, &m, &json!({"email": "al@x.org"})), ["d"]);
}

#[test]
fn and_within_rule_or_across_rules() {
    let (names, m) = compile(&[
        rule(
            "admin",
            vec![
                cond("groups", ClaimOp::Contains, "admins"),
                cond("email", ClaimOp::Suffix, "@example.com"),
            ],
        ),
        rule("admin", vec![cond("sub", ClaimOp::Equals, "root")]),
        rule("user", vec![cond("email", ClaimOp::Suffix, "@example.com")]),
    ]);
    let both = json!({"groups": ["admins"], "email": "a@example.com"});
    assert_eq!(roles(&names, &m, &both), ["admin", "user"]);
    let group_only = json!({"groups": ["admins"], "email": "a@evil.com"});
    assert!(roles(&names, &m, &group_only).is_empty());
    let email_only = json!({"groups": ["users"], "email": "a@example.com"});
    assert_eq!(roles(&names, &m, &email_only), ["user"]);
    // The second rule for the same role (OR).
    assert_eq!(roles(&names, &m, &json!({"sub": "root"})), ["admin"]);
}

#[test]
fn and_on_same_claim_needs_both_values() {
    let (names, m) = compile(&[rule(
        "both",
        vec![
            cond("groups", ClaimOp::Contains, "a"),
            cond("groups", ClaimOp::Contains, "b"),
        ],
    )]);
    assert_eq!(roles(&names, &m, &json!({"groups": ["b", "a"]})), ["both"]);
    assert!(roles(&names, &m, &json!({"groups": ["a", "a"]})).is_empty());
}

#[test]
fn type_confusion_never_matches() {
    let (names, m) = compile(&[
        rule("n", vec![cond("level", ClaimOp::Equals, "5")]),
        rule("b", vec![cond("email_verified", ClaimOp::Equals, "true")]),
        rule("o", vec![cond("groups", ClaimOp::Contains, "admins")]),
        rule("p", vec![cond("level", ClaimOp::Prefix, "5")]),
        rule("h", vec![cond("scope", ClaimOp::Has, "null")]),
    ]);
    let token = json!({
        "level": 5,
        "email_verified": true,
        "groups": [{"name": "admins"}, ["admins"], 1, null, {"admins": true}],
        "scope": null,
    });
    assert!(roles(&names, &m, &token).is_empty());
    assert!(roles(&names, &m, &json!({"groups": {"admins": "admins"}})).is_empty());
    // The same rules do match strings.
    let strings =
        json!({"level": "5", "email_verified": "true", "groups": ["admins"], "scope": "null"});
    assert_eq!(roles(&names, &m, &strings), ["n", "b", "o", "p", "h"]);
}

#[test]
fn absent_claims_and_empty_config() {
    let (names, m) = compile(&[rule("r", vec![cond("groups", ClaimOp::Contains, "x")])]);
    assert!(roles(&names, &m, &json!({})).is_empty());
    let (names, m) = compile(&[]);
    assert!(roles(&names, &m, &json!({"groups": ["x"]})).is_empty());
    assert_eq!(
        m.explain(&JsonObject::from(&claims(json!({"groups": ["x"]})))),
        ""
    );
}

#[test]
fn equals_and_contains_are_one_condition() {
    let (names, m) = compile(&[
        rule(
            "r",
            vec![
                cond("g", ClaimOp::Equals, "x"),
                cond("g", ClaimOp::Contains, "x"),
            ],
        ),
        rule("s", vec![cond("g", ClaimOp::Contains, "x")]),
    ]);
    assert_eq!(m.cond_count, 1);
    assert_eq!(roles(&names, &m, &json!({"g": "x"})), ["r", "s"]);
}

#[test]
fn compile_refuses_bad_rules() {
    let ok = || cond("groups", ClaimOp::Equals, "x");
    let cases: Vec<(RoleRule, &str)> = vec![
        (rule("", vec![ok()]), "roles[1].role"),
        (rule("a,b", vec![ok()]), "roles[1].role"),
        (rule(" admin", vec![ok()]), "roles[1].role"),
        (rule("ad\nmin", vec![ok()]), "roles[1].role"),
        (rule("r", vec![]), "roles[1].when"),
        (
            rule("r", vec![ok(), cond("", ClaimOp::Equals, "x")]),
            "roles[1].when[1].claim",
        ),
        (
            rule("r", vec![cond("a..b", ClaimOp::Equals, "x")]),
            "roles[1].when[0].claim",
        ),
        (
            rule("r", vec![cond(".a", ClaimOp::Equals, "x")]),
            "roles[1].when[0].claim",
        ),
        (
            rule("r", vec![cond("a.", ClaimOp::Equals, "x")]),
            "roles[1].when[0].claim",
        ),
        (
            rule("r", vec![cond("groups", ClaimOp::Equals, "")]),
            "roles[1].when[0].value",
        ),
        (
            rule("r", vec![cond("groups", ClaimOp::Suffix, "")]),
            "roles[1].when[0].value",
        ),
        (
            rule("r", vec![cond("scope", ClaimOp::Has, "read write")]),
            "roles[1].when[0].value",
        ),
    ];
    for (bad, at) in cases {
        let e = compile_err(&[rule("fine", vec![ok()]), bad]);
        assert_eq!(e.at, at, "{e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn compile_refuses_role_missing_from_names() {
    let rules = [rule("r", vec![cond("g", ClaimOp::Equals, "x")])];
    let e = RoleMatcher::compile(&rules, &RoleNames::default()).expect_err("unknown role");
    assert_eq!(e.at, "roles[0].role");
}

#[test]
fn thousand_rules_compile_and_match() {
    let mut rules: Vec<RoleRule> = (0..1000)
        .map(|i| {
            rule(
                &format!("role{i}"),
                vec![
                    cond("iss", ClaimOp::Equals, "https://idp.example.com/"),
                    cond("groups", ClaimOp::Contains, &format!("group-{i}")),
                ],
            )
        })
        .collect();
    rules.push(rule(
        "role7",
        vec![cond("email", ClaimOp::Suffix, "@seven.example")],
    ));
    let (names, m) = compile(&rules);
    assert_eq!(names.len(), 1000);
    // One shared `iss` condition, one per group, one suffix.
    assert_eq!(m.cond_count, 1002);
    // Each group rule is anchored on its own group condition, not on the shared `iss` one.
    assert!(m.anchored.iter().all(|a| a.len() <= 1));

    let token = json!({"iss": "https://idp.example.com/", "groups": ["group-3", "group-999", "group-1000"]});
    assert_eq!(roles(&names, &m, &token), ["role3", "role999"]);
    let wrong_iss = json!({"iss": "https://evil.example.com/", "groups": ["group-3"]});
    assert!(roles(&names, &m, &wrong_iss).is_empty());
    assert_eq!(
        roles(&names, &m, &json!({"email": "x@seven.example"})),
        ["role7"]
    );
}

#[test]
fn many_conditions_spill_scratch_to_heap() {
    let rules: Vec<RoleRule> = (0..5000)
        .map(|i| rule("r", vec![cond("g", ClaimOp::Equals, &format!("v{i}"))]))
        .collect();
    let (names, m) = compile(&rules);
    assert!(m.cond_count.div_ceil(64) > STACK_WORDS);
    assert_eq!(roles(&names, &m, &json!({"g": "v4999"})), ["r"]);
    assert!(roles(&names, &m, &json!({"g": "v5000"})).is_empty());
}

#[test]
fn explain_lists_values_sorted_and_truncated() {
    let (_, m) = compile(&[
        rule(
            "a",
            vec![
                cond("scope", ClaimOp::Has, "x"),
                cond("groups", ClaimOp::Contains, "y"),
            ],
        ),
        rule(
            "b",
            vec![
                cond("realm_access.roles", ClaimOp::Contains, "z"),
                cond("email", ClaimOp::Suffix, "@e"),
            ],
        ),
        rule(
            "c",
            vec![
                cond("level", ClaimOp::Equals, "1"),
                cond("groups", ClaimOp::Prefix, "t"),
            ],
        ),
    ]);
    let long = "x".repeat(100);
    let token = json!({
        "scope": "read write",
        "groups": ["g1", 2, "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9", "g10", "g11"],
        "realm_access": {"roles": [long]},
        "level": 1,
        "sub": "not referenced",
    });
    let got = m.explain(&JsonObject::from(&claims(token)));
    let want = format!(
        "email=<absent> groups=[g1,g2,g3,g4,g5,g6,g7,g8,g9,g10,…] level=<number> realm_access.roles=[{}…] scope=[read write]",
        "x".repeat(64)
    );
    assert_eq!(got, want);
    // Control characters never reach the log line.
    let got = m.explain(&JsonObject::from(&claims(
        json!({"email": "a\nb\u{1b}[31m"}),
    )));
    assert!(got.starts_with("email=[ab[31m] "), "{got}");
}
