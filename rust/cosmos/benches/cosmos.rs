//! The per-request cost the Cosmos DB gateway adds in the core: parsing the request, checking
//! the grants, and the master-key signature (target: under 5 µs together).

use caddy_iap_cosmos::permissions::{Grant, Permissions, Scope};
use caddy_iap_cosmos::signing::{MasterKey, http_date};
use caddy_iap_cosmos::{Actions, RequestFacts, parse};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

// A random bench key, not a real account's.
const KEY: &str =
    "q2Zu2m7dC8m2bYlq0oHn4k3p6Jw5sXr1TgEaVhUyNfQiLcKbOzPjRdWeMtAxS9G0F1H2I3J4K5L6M7N8O9P0Qw==";

fn bench(c: &mut Criterion) {
    let key = MasterKey::from_base64(KEY).unwrap();
    let perms = Permissions::new(vec![Grant {
        role: "reader".into(),
        actions: Actions::parse("data_reader").unwrap(),
        scope: Scope::parse("dbs/app/colls/orders").unwrap(),
    }]);
    let roles = ["reader"];
    let date = http_date(1_800_000_000);
    let facts = RequestFacts::new("GET", "/dbs/app/colls/orders/docs/order-42");
    c.bench_function("cosmos/sign only", |b| {
        b.iter(|| {
            key.authorization(
                black_box("GET"),
                "docs",
                black_box("dbs/app/colls/orders/docs/order-42"),
                &date,
            )
        })
    });
    c.bench_function("cosmos/parse+authorize+sign point read", |b| {
        b.iter(|| {
            let p = parse(black_box(&facts)).unwrap();
            assert!(perms.allows(&roles, p.operation, &p.target));
            key.authorization(
                facts.method,
                p.resource_type,
                &p.resource_link,
                &http_date(black_box(1_800_000_000)),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
