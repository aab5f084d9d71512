//! Cosmos DB request parsing and the client `Authorization` parser, on fuzzer-made requests.
//!
//! Properties, for every input:
//! - neither parser panics;
//! - an accepted request names only well-formed resources: every link segment is non-empty, not
//!   `.`/`..`, and free of `/`, `\`, `?`, `#` and control characters; type segments are known;
//!   the target's names are the link's names;
//! - the kind flags forwarded upstream are only ever on for a POST to a feed, and a query is
//!   only accepted with a body that holds a query;
//! - a grant on `dbs/app/colls/orders` allows data actions on that container only.
#![no_main]

use arbitrary::Arbitrary;
use caddy_iap_cosmos::client_auth::token_from_authorization;
use caddy_iap_cosmos::permissions::{Grant, Permissions, Scope};
use caddy_iap_cosmos::{Actions, Operation, RequestFacts, Target, parse};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get",
];
const FLAGS: [&str; 7] = ["", "true", "True", "false", "1", "t", "TRUE "];
const TYPES: [&str; 4] = [
    "",
    "application/json",
    "application/query+json",
    "application/query+json; charset=utf-8",
];
const KNOWN_TYPES: [&str; 9] = [
    "", "dbs", "offers", "colls", "docs", "pkranges", "sprocs", "triggers", "udfs",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: u8,
    path: &'a str,
    is_query: u8,
    content_type: u8,
    is_upsert: u8,
    is_batch: u8,
    body: &'a [u8],
    authorization: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(token) = token_from_authorization(input.authorization) {
        assert!(!token.is_empty());
    }
    let pick = |pool: &[&'static str], i: u8| pool[i as usize % pool.len()];
    let method = pick(&METHODS, input.method);
    let facts = RequestFacts::new(method, input.path).with_headers(
        pick(&FLAGS, input.is_query),
        pick(&TYPES, input.content_type),
        pick(&FLAGS, input.is_upsert),
        pick(&FLAGS, input.is_batch),
        input.body,
    );
    let Ok(p) = parse(&facts) else {
        return;
    };
    assert!(
        KNOWN_TYPES.contains(&p.resource_type) || p.resource_type == "conflicts",
        "{p:?}"
    );
    if !p.resource_link.is_empty() {
        for seg in p.resource_link.split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{p:?}");
            assert!(
                !seg.contains(['\\', '?', '#']) && !seg.chars().any(char::is_control),
                "{p:?}"
            );
        }
    }
    let link: Vec<&str> = p.resource_link.split('/').collect();
    match &p.target {
        Target::Account => {}
        Target::Database(db) => assert_eq!(link.get(1), Some(&db.as_str()), "{p:?}"),
        Target::Container { db, coll } => {
            assert_eq!(link.get(1), Some(&db.as_str()), "{p:?}");
            assert_eq!(link.get(3), Some(&coll.as_str()), "{p:?}");
        }
    }
    if p.flags.query || p.flags.upsert || p.flags.batch {
        assert_eq!(method, "POST", "{p:?}");
    }
    if p.flags.query && !p.flags.batch {
        let body: serde_json::Value =
            serde_json::from_slice(input.body).expect("a query needs a JSON body");
        assert!(
            body.get("query").is_some_and(serde_json::Value::is_string),
            "{p:?}"
        );
    }

    let grants = Permissions::new(vec![Grant {
        role: "r".into(),
        actions: Actions::parse("*").unwrap().union(Actions::READ_METADATA),
        scope: Scope::parse("dbs/app/colls/orders").unwrap(),
    }]);
    if let Operation::Actions(_) = p.operation
        && grants.allows(&["r"], p.operation, &p.target)
    {
        assert_eq!(
            p.target,
            Target::Container {
                db: "app".into(),
                coll: "orders".into()
            },
            "{p:?}"
        );
    }
});
