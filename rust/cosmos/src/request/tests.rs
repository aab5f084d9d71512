use super::*;
use crate::Actions as A;

const QUERY: &[u8] = br#"{"query":"SELECT * FROM c","parameters":[]}"#;
const DOC: &[u8] = br#"{"id":"1","total":5}"#;

fn facts<'a>(method: &'a str, path: &'a str) -> RequestFacts<'a> {
    RequestFacts::new(method, path)
}

fn ok(f: RequestFacts<'_>) -> ParsedRequest {
    parse(&f).unwrap_or_else(|e| panic!("{} {}: {e}", f.method, f.path))
}

/// The path -> (resource type, resource link) table of the Cosmos DB reference, row by row.
#[test]
fn signing_type_and_link_match_the_reference_table() {
    let query = facts("POST", "/dbs/d/colls/c/docs").with_headers(
        "true",
        "application/query+json",
        "",
        "",
        QUERY,
    );
    let rows: [(RequestFacts<'_>, &str, &str); 9] = [
        (facts("GET", "/"), "", ""),
        (facts("GET", "/dbs"), "dbs", ""),
        (facts("GET", "/dbs/ToDoList"), "dbs", "dbs/ToDoList"),
        (
            facts("POST", "/dbs/d/colls/c/docs"),
            "docs",
            "dbs/d/colls/c",
        ),
        (query, "docs", "dbs/d/colls/c"),
        (
            facts("GET", "/dbs/d/colls/c/docs/i"),
            "docs",
            "dbs/d/colls/c/docs/i",
        ),
        (
            facts("PUT", "/dbs/d/colls/c/docs/i"),
            "docs",
            "dbs/d/colls/c/docs/i",
        ),
        (
            facts("DELETE", "/dbs/d/colls/c/docs/i"),
            "docs",
            "dbs/d/colls/c/docs/i",
        ),
        (
            facts("GET", "/dbs/d/colls/c/pkranges"),
            "pkranges",
            "dbs/d/colls/c",
        ),
    ];
    for (f, rtype, link) in rows {
        let p = ok(f);
        assert_eq!(
            (p.resource_type, p.resource_link.as_str()),
            (rtype, link),
            "{} {}",
            f.method,
            f.path
        );
    }
    let p = ok(facts("PATCH", "/dbs/d/colls/c/docs/i"));
    assert_eq!(
        (p.resource_type, p.resource_link.as_str()),
        ("docs", "dbs/d/colls/c/docs/i")
    );
}

#[test]
fn names_are_url_decoded_and_trailing_slash_is_the_python_sdk_form() {
    let p = ok(facts(
        "GET",
        "/dbs/Test+DB/colls/Test%20C%C3%A9/docs/a%2Bb/",
    ));
    assert_eq!(p.resource_link, "dbs/Test+DB/colls/Test Cé/docs/a+b");
    assert_eq!(
        p.target,
        Target::Container {
            db: "Test+DB".into(),
            coll: "Test Cé".into()
        }
    );
    let p = ok(facts("POST", "/dbs/app/colls/orders/docs/"));
    assert_eq!(
        (p.resource_type, p.resource_link.as_str()),
        ("docs", "dbs/app/colls/orders")
    );
}

#[test]
fn operations_map_to_cosmos_data_actions() {
    let actions = |f: RequestFacts<'_>| ok(f).operation;
    assert_eq!(
        actions(facts("GET", "/dbs/d/colls/c/docs/i")),
        Operation::Actions(A::ITEMS_READ)
    );
    assert_eq!(
        actions(facts("POST", "/dbs/d/colls/c/docs")),
        Operation::Actions(A::ITEMS_CREATE)
    );
    let upsert =
        facts("POST", "/dbs/d/colls/c/docs").with_headers("", "application/json", "True", "", DOC);
    assert_eq!(actions(upsert), Operation::Actions(A::ITEMS_UPSERT));
    let query = facts("POST", "/dbs/d/colls/c/docs").with_headers(
        "true",
        "application/query+json",
        "",
        "",
        QUERY,
    );
    assert_eq!(
        actions(query),
        Operation::Actions(A::EXECUTE_QUERY.union(A::READ_CHANGE_FEED))
    );
    let batch = facts("POST", "/dbs/d/colls/c/docs").with_headers("", "", "", "true", b"[]");
    assert_eq!(actions(batch), Operation::Actions(A::ITEMS_ALL));
    assert_eq!(
        actions(facts("GET", "/dbs/d/colls/c/docs")),
        Operation::Actions(A::READ_CHANGE_FEED)
    );
    assert_eq!(
        actions(facts("PUT", "/dbs/d/colls/c/docs/i")),
        Operation::Actions(A::ITEMS_REPLACE)
    );
    assert_eq!(
        actions(facts("PATCH", "/dbs/d/colls/c/docs/i")),
        Operation::Actions(A::ITEMS_REPLACE)
    );
    assert_eq!(
        actions(facts("DELETE", "/dbs/d/colls/c/docs/i")),
        Operation::Actions(A::ITEMS_DELETE)
    );
    assert_eq!(
        actions(facts("POST", "/dbs/d/colls/c/sprocs/s")),
        Operation::Actions(A::EXECUTE_STORED_PROCEDURE)
    );
    assert_eq!(
        actions(facts("GET", "/dbs/d/colls/c/conflicts")),
        Operation::Actions(A::MANAGE_CONFLICTS)
    );
    assert_eq!(
        actions(facts("DELETE", "/dbs/d/colls/c/conflicts/x")),
        Operation::Actions(A::MANAGE_CONFLICTS)
    );
    for (m, p) in [
        ("GET", "/"),
        ("GET", "/dbs/d"),
        ("GET", "/dbs/d/colls/c"),
        ("GET", "/dbs/d/colls/c/pkranges"),
    ] {
        assert_eq!(actions(facts(m, p)), Operation::StartupMetadata, "{m} {p}");
    }
    for (m, p) in [
        ("GET", "/dbs"),
        ("GET", "/offers"),
        ("GET", "/dbs/d/colls"),
        ("GET", "/dbs/d/colls/c/sprocs"),
    ] {
        assert_eq!(
            actions(facts(m, p)),
            Operation::Actions(A::READ_METADATA),
            "{m} {p}"
        );
    }
    for (m, p) in [
        ("POST", "/dbs"),
        ("DELETE", "/dbs/d"),
        ("POST", "/dbs/d/colls"),
        ("PUT", "/dbs/d/colls/c"),
        ("DELETE", "/dbs/d/colls/c"),
        ("POST", "/dbs/d/colls/c/sprocs"),
        ("PUT", "/dbs/d/colls/c/triggers/t"),
        ("DELETE", "/dbs/d/colls/c/udfs/u"),
    ] {
        assert_eq!(actions(facts(m, p)), Operation::Management, "{m} {p}");
    }
}

#[test]
fn unknown_shapes_are_refused_not_guessed() {
    for (m, p) in [
        ("GET", ""),
        ("GET", "dbs"),
        ("GET", "//dbs"),
        ("GET", "/dbs//colls"),
        ("GET", "/dbs/d/colls/c//docs"),
        ("GET", "/DBS/d"),
        ("GET", "/dbs/d/users/u"),
        ("GET", "/dbs/d/users/u/permissions"),
        ("GET", "/dbs/d/colls/c/docs/i/attachments"),
        ("GET", "/dbs/d/colls/c/docs/i/attachments/a"),
        ("GET", "/dbs/d/colls/c/unknown"),
        ("GET", "/offers/x"),
        ("GET", "/dbs/d/offers"),
        ("GET", "/dbs/%2e%2e/colls/c/docs/i"),
        ("GET", "/dbs/../colls/c"),
        ("GET", "/dbs/a%2Fb/colls/c/docs/i"),
        ("GET", "/dbs/a%5Cb/colls/c"),
        ("GET", "/dbs/a%00b"),
        ("GET", "/dbs/a%zz"),
        ("GET", "/dbs/a%C3"),
        ("GET", "/dbs/d/colls/c/docs/i/"),
        ("POST", "/dbs/d/colls/c/docs/i"),
        ("PUT", "/dbs/d/colls/c/docs"),
        ("OPTIONS", "/dbs"),
        ("TRACE", "/dbs/d/colls/c/docs/i"),
        ("POST", "/dbs/d/colls/c/conflicts"),
    ] {
        let r = parse(&facts(m, p));
        // A trailing slash after an item id is fine for the parser; everything else is refused.
        if p == "/dbs/d/colls/c/docs/i/" {
            assert!(r.is_ok());
            continue;
        }
        assert!(r.is_err(), "{m} {p} was accepted: {r:?}");
    }
}

#[test]
fn kind_headers_are_strict_and_must_agree_with_the_body() {
    let post = || facts("POST", "/dbs/d/colls/c/docs");
    let p = ok(post().with_headers(
        "true",
        "application/query+json; charset=utf-8",
        "",
        "",
        QUERY,
    ));
    assert_eq!(
        p.flags,
        Flags {
            query: true,
            upsert: false,
            batch: false
        }
    );
    let p = ok(post().with_headers("", "application/json", "false", "FALSE", DOC));
    assert_eq!(p.flags, Flags::default());
    assert_eq!(p.operation, Operation::Actions(A::ITEMS_CREATE));
    for (q, ct, up, batch, body, why) in [
        (
            "1",
            "application/query+json",
            "",
            "",
            QUERY,
            "1 is not a boolean here",
        ),
        (
            "yes",
            "application/query+json",
            "",
            "",
            QUERY,
            "yes is not a boolean",
        ),
        ("", "", "t", "", DOC, "t is not a boolean"),
        (
            "true",
            "application/json",
            "",
            "",
            QUERY,
            "isquery without the query content type",
        ),
        (
            "",
            "application/query+json",
            "",
            "",
            QUERY,
            "query content type without isquery",
        ),
        (
            "true",
            "application/query+json",
            "",
            "",
            DOC,
            "a query request that carries a document",
        ),
        (
            "",
            "application/json",
            "",
            "",
            QUERY,
            "a create whose body the emulator would run as a query",
        ),
        (
            "",
            "application/json",
            "true",
            "",
            QUERY,
            "an upsert likewise",
        ),
        ("", "", "true", "true", b"[]", "batch and upsert"),
    ] {
        let r = parse(&post().with_headers(q, ct, up, batch, body));
        assert!(r.is_err(), "{why}: {r:?}");
    }
    // Kind headers on requests they do not apply to are refused, not forwarded.
    for (m, p) in [
        ("GET", "/dbs/d/colls/c/docs/i"),
        ("PUT", "/dbs/d/colls/c/docs/i"),
        ("GET", "/dbs/d/colls/c/docs"),
    ] {
        assert!(
            parse(&facts(m, p).with_headers("", "", "true", "", b"")).is_err(),
            "{m} {p}"
        );
    }
    // A document may hold a non-string field named query.
    let p = ok(post().with_headers(
        "",
        "application/json",
        "",
        "",
        br#"{"id":"1","query":{"x":1}}"#,
    ));
    assert_eq!(p.operation, Operation::Actions(A::ITEMS_CREATE));
}
