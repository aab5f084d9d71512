//! Grants in Cosmos DB's own data-plane RBAC vocabulary: data actions on resource scopes.
//!
//! A grant gives one caddy-iap role a set of data actions (`items/read`, `executeQuery`, ...)
//! on a scope: the account, a database, or a container, with `*` for any name. Names are
//! compared exactly (Cosmos ids are case-sensitive).

use std::fmt;

use crate::request::{Operation, Target};

/// A set of Cosmos DB data actions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u16);

/// The full action names' common prefixes; grants may use the full or the short name.
const ACCOUNT_PREFIX: &str = "Microsoft.DocumentDB/databaseAccounts/";
const CONTAINER_PREFIX: &str = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/";

impl Actions {
    /// `readMetadata`.
    pub const READ_METADATA: Self = Self(1);
    /// `items/read` (point reads).
    pub const ITEMS_READ: Self = Self(1 << 1);
    /// `items/create`.
    pub const ITEMS_CREATE: Self = Self(1 << 2);
    /// `items/replace` (also PATCH).
    pub const ITEMS_REPLACE: Self = Self(1 << 3);
    /// `items/upsert`.
    pub const ITEMS_UPSERT: Self = Self(1 << 4);
    /// `items/delete`.
    pub const ITEMS_DELETE: Self = Self(1 << 5);
    /// `executeQuery`.
    pub const EXECUTE_QUERY: Self = Self(1 << 6);
    /// `readChangeFeed` (also listing a container's items).
    pub const READ_CHANGE_FEED: Self = Self(1 << 7);
    /// `executeStoredProcedure`.
    pub const EXECUTE_STORED_PROCEDURE: Self = Self(1 << 8);
    /// `manageConflicts`.
    pub const MANAGE_CONFLICTS: Self = Self(1 << 9);
    /// `items/*`.
    pub const ITEMS_ALL: Self = Self(0b11_1110);
    /// `*` (`sqlDatabases/containers/*`): every container action.
    pub const CONTAINERS_ALL: Self = Self(0b11_1111_1110);

    const NAMES: [(Self, &'static str); 10] = [
        (Self::READ_METADATA, "readMetadata"),
        (Self::ITEMS_READ, "items/read"),
        (Self::ITEMS_CREATE, "items/create"),
        (Self::ITEMS_REPLACE, "items/replace"),
        (Self::ITEMS_UPSERT, "items/upsert"),
        (Self::ITEMS_DELETE, "items/delete"),
        (Self::EXECUTE_QUERY, "executeQuery"),
        (Self::READ_CHANGE_FEED, "readChangeFeed"),
        (Self::EXECUTE_STORED_PROCEDURE, "executeStoredProcedure"),
        (Self::MANAGE_CONFLICTS, "manageConflicts"),
    ];

    /// No action.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every action of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses one action name: short (`items/read`), full
    /// (`Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read`), a
    /// wildcard (`items/*`, `*`), or a built-in role (`data_reader`, `data_contributor`, with
    /// the actions of Cosmos DB Built-in Data Reader and Data Contributor).
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(short) = name.strip_prefix(CONTAINER_PREFIX) {
            return Self::parse_short(short).filter(|a| *a != Self::READ_METADATA);
        }
        if let Some(short) = name.strip_prefix(ACCOUNT_PREFIX) {
            return (short == "readMetadata").then_some(Self::READ_METADATA);
        }
        match name {
            "data_reader" => Some(Self(
                Self::READ_METADATA.0
                    | Self::ITEMS_READ.0
                    | Self::EXECUTE_QUERY.0
                    | Self::READ_CHANGE_FEED.0,
            )),
            "data_contributor" => Some(Self::READ_METADATA.union(Self::CONTAINERS_ALL)),
            _ => Self::parse_short(name),
        }
    }

    fn parse_short(short: &str) -> Option<Self> {
        match short {
            "items/*" => Some(Self::ITEMS_ALL),
            "*" => Some(Self::CONTAINERS_ALL),
            _ => Self::NAMES
                .iter()
                .find(|(_, n)| *n == short)
                .map(|(a, _)| *a),
        }
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (a, n) in Self::NAMES {
            if self.contains(a) {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// One name in a scope: exact, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Any,
    Exact(Box<str>),
}

impl Name {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(n) => **n == *name,
        }
    }
}

/// Where a grant applies: the account, a database, or a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    db: Name,
    coll: Name,
}

impl Scope {
    /// Parses `/` (the account), `dbs/{db}` or `dbs/{db}/colls/{coll}`, each name exact or
    /// `*`. A leading slash is optional.
    pub fn parse(s: &str) -> Option<Self> {
        let name = |n: &str| match n {
            "*" => Some(Name::Any),
            "" => None,
            n if n.contains(['/', '\\', '?', '#']) => None,
            n => Some(Name::Exact(n.into())),
        };
        if s.is_empty() {
            return None;
        }
        let s = s.strip_prefix('/').unwrap_or(s);
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [""] | ["*"] => Some(Self {
                db: Name::Any,
                coll: Name::Any,
            }),
            ["dbs", db] => Some(Self {
                db: name(db)?,
                coll: Name::Any,
            }),
            ["dbs", db, "colls", coll] => Some(Self {
                db: name(db)?,
                coll: name(coll)?,
            }),
            _ => None,
        }
    }

    /// Whether the scope holds every part of `target`.
    fn covers(&self, target: &Target) -> bool {
        match target {
            Target::Account => self.db == Name::Any && self.coll == Name::Any,
            Target::Database(db) => self.db.matches(db) && self.coll == Name::Any,
            Target::Container { db, coll } => self.db.matches(db) && self.coll.matches(coll),
        }
    }

    /// Whether the scope holds any part of `target` (for the metadata SDKs read to start).
    fn reaches(&self, target: &Target) -> bool {
        match target {
            Target::Account => true,
            Target::Database(db) => self.db.matches(db),
            Target::Container { db, coll } => self.db.matches(db) && self.coll.matches(coll),
        }
    }
}

/// One role's actions on one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The caddy-iap role.
    pub role: Box<str>,
    /// What it may do.
    pub actions: Actions,
    /// Where.
    pub scope: Scope,
}

/// All grants of a gateway.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    grants: Vec<Grant>,
}

impl Permissions {
    /// Grants, in config order.
    pub fn new(grants: Vec<Grant>) -> Self {
        Self { grants }
    }

    /// Whether any of `roles` may perform `operation` on `target`. Actions add up across the
    /// grants that cover the target (a query needs `executeQuery` and `readChangeFeed`, which
    /// two grants may give).
    pub fn allows<R: AsRef<str>>(
        &self,
        roles: &[R],
        operation: Operation,
        target: &Target,
    ) -> bool {
        let mine = self
            .grants
            .iter()
            .filter(|g| roles.iter().any(|r| r.as_ref() == &*g.role));
        match operation {
            Operation::Management => false,
            Operation::StartupMetadata => mine.into_iter().any(|g| g.scope.reaches(target)),
            Operation::Actions(needed) => mine
                .filter(|g| g.scope.covers(target))
                .fold(Actions::empty(), |have, g| have.union(g.actions))
                .contains(needed),
        }
    }

    /// Whether `role` has any grant (roles without one are not worth a denial log line).
    pub fn knows_role(&self, role: &str) -> bool {
        self.grants.iter().any(|g| &*g.role == role)
    }
}

#[cfg(test)]
mod tests;
