use super::*;
use crate::request::{Operation, Target};

fn grant(role: &str, actions: &[&str], scope: &str) -> Grant {
    Grant {
        role: role.into(),
        actions: actions
            .iter()
            .map(|a| Actions::parse(a).unwrap_or_else(|| panic!("{a}")))
            .fold(Actions::empty(), Actions::union),
        scope: Scope::parse(scope).unwrap_or_else(|| panic!("{scope}")),
    }
}

fn container(db: &str, coll: &str) -> Target {
    Target::Container {
        db: db.into(),
        coll: coll.into(),
    }
}

#[test]
fn action_names_short_full_wildcard_and_builtin() {
    assert_eq!(Actions::parse("items/read"), Some(Actions::ITEMS_READ));
    assert_eq!(
        Actions::parse("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read"),
        Some(Actions::ITEMS_READ)
    );
    assert_eq!(
        Actions::parse("Microsoft.DocumentDB/databaseAccounts/readMetadata"),
        Some(Actions::READ_METADATA)
    );
    assert_eq!(
        Actions::parse("Microsoft.DocumentDB/databaseAccounts/items/read"),
        None
    );
    assert_eq!(
        Actions::parse(
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readMetadata"
        ),
        None
    );
    assert_eq!(
        Actions::parse("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/*"),
        Some(Actions::CONTAINERS_ALL)
    );
    assert_eq!(Actions::parse("items/*"), Some(Actions::ITEMS_ALL));
    assert!(
        Actions::parse("data_reader")
            .unwrap()
            .contains(Actions::EXECUTE_QUERY.union(Actions::READ_CHANGE_FEED))
    );
    assert!(
        !Actions::parse("data_reader")
            .unwrap()
            .contains(Actions::ITEMS_CREATE)
    );
    assert!(
        Actions::parse("data_contributor")
            .unwrap()
            .contains(Actions::ITEMS_ALL.union(Actions::READ_METADATA))
    );
    for bad in [
        "",
        "Items/Read",
        "items/write",
        "read",
        "notDataActions",
        "Microsoft.DocumentDB/databaseAccounts/data_reader",
    ] {
        assert_eq!(Actions::parse(bad), None, "{bad}");
    }
    assert_eq!(
        Actions::ITEMS_ALL.union(Actions::READ_METADATA).to_string(),
        "readMetadata+items/read+items/create+items/replace+items/upsert+items/delete"
    );
}

#[test]
fn scopes() {
    for ok in [
        "/",
        "*",
        "dbs/app",
        "/dbs/app",
        "dbs/*",
        "dbs/app/colls/orders",
        "dbs/*/colls/orders",
        "dbs/app/colls/*",
    ] {
        assert!(Scope::parse(ok).is_some(), "{ok}");
    }
    for bad in [
        "",
        "dbs",
        "dbs/",
        "dbs/app/colls",
        "dbs/app/colls/",
        "colls/x",
        "dbs/app/colls/orders/docs/x",
        "dbs/a\\b",
    ] {
        assert!(Scope::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn reader_and_writer_as_in_the_issue() {
    let p = Permissions::new(vec![
        grant("reader", &["data_reader"], "dbs/app/colls/orders"),
        grant(
            "writer",
            &["items/*", "readMetadata"],
            "dbs/app/colls/orders",
        ),
    ]);
    let orders = container("app", "orders");
    let payroll = container("app", "payroll");
    let q = Operation::Actions(Actions::EXECUTE_QUERY.union(Actions::READ_CHANGE_FEED));
    let read = Operation::Actions(Actions::ITEMS_READ);
    let create = Operation::Actions(Actions::ITEMS_CREATE);
    assert!(p.allows(&["reader"], read, &orders));
    assert!(p.allows(&["reader"], q, &orders));
    assert!(!p.allows(&["reader"], create, &orders));
    assert!(!p.allows(&["reader"], read, &payroll));
    assert!(p.allows(&["writer"], create, &orders));
    assert!(!p.allows(&["writer"], create, &payroll));
    assert!(
        !p.allows(&["writer"], q, &orders),
        "items/* is not executeQuery"
    );
    assert!(!p.allows(&["nobody"], read, &orders));
    assert!(!p.allows::<&str>(&[], read, &orders));
    // Startup metadata: the account, the database and the container the grant reaches.
    for t in [
        Target::Account,
        Target::Database("app".into()),
        orders.clone(),
    ] {
        assert!(
            p.allows(&["reader"], Operation::StartupMetadata, &t),
            "{t:?}"
        );
    }
    assert!(!p.allows(&["reader"], Operation::StartupMetadata, &payroll));
    assert!(!p.allows(
        &["reader"],
        Operation::StartupMetadata,
        &Target::Database("other".into())
    ));
    assert!(!p.allows(&["nobody"], Operation::StartupMetadata, &Target::Account));
    // Listing containers needs readMetadata on the whole database.
    assert!(!p.allows(
        &["reader"],
        Operation::Actions(Actions::READ_METADATA),
        &Target::Database("app".into())
    ));
    // Management is never allowed, whatever the grant.
    let admin = Permissions::new(vec![grant("admin", &["data_contributor"], "/")]);
    assert!(!admin.allows(&["admin"], Operation::Management, &orders));
    assert!(admin.allows(
        &["admin"],
        Operation::Actions(Actions::READ_METADATA),
        &Target::Account
    ));
}

#[test]
fn actions_add_up_across_grants_and_wildcards_match_names_only() {
    let p = Permissions::new(vec![
        grant("r", &["executeQuery"], "dbs/*/colls/orders"),
        grant("r", &["readChangeFeed"], "dbs/app"),
    ]);
    let q = Operation::Actions(Actions::EXECUTE_QUERY.union(Actions::READ_CHANGE_FEED));
    assert!(p.allows(&["r"], q, &container("app", "orders")));
    assert!(!p.allows(&["r"], q, &container("other", "orders")));
    assert!(!p.allows(&["r"], q, &container("app", "orders2")));
    assert!(
        !p.allows(&["r"], q, &container("App", "orders")),
        "names are case-sensitive"
    );
}
