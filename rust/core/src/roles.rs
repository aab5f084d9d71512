//! Claim-to-role mapping, compiled once per config. (STUB: being written.)
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{AllowRule, RoleRule};
use crate::error::ConfigError;

/// Role names interned to small indices, from role rules and allow rules alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleNames {
    names: Vec<Arc<str>>,
}

impl RoleNames {
    /// Interns every role named in `rules` and `allow`.
    pub(crate) fn new(rules: &[RoleRule], allow: &[AllowRule]) -> Self {
        let _ = (rules, allow);
        todo!()
    }

    /// Index of `name`, if known.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    /// Name of role `i`.
    pub(crate) fn name(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }

    /// Number of roles.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// A set of role indices (a bitset sized for the config's role count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct RoleSet {
    bits: Vec<u64>,
}

impl RoleSet {
    /// Adds role `i`.
    pub(crate) fn insert(&mut self, i: usize) {
        let _ = i;
        todo!()
    }
    /// Whether role `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        let _ = i;
        todo!()
    }
    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        todo!()
    }
    /// Role indices in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::empty()
    }
}

/// Compiled role rules.
#[derive(Debug)]
pub(crate) struct RoleMatcher {}

impl RoleMatcher {
    /// Compiles `rules`; refuses empty role names, empty conditions and empty values.
    pub(crate) fn compile(rules: &[RoleRule], names: &RoleNames) -> Result<Self, ConfigError> {
        let _ = (rules, names);
        todo!()
    }

    /// The roles `claims` earn.
    pub(crate) fn roles_for(&self, claims: &Map<String, Value>) -> RoleSet {
        let _ = claims;
        todo!()
    }

    /// For denial logs: the values of the claims the rules look at, e.g. `groups=[a,b] scope=[read]`
    /// (truncated; claim values, never token bytes).
    pub(crate) fn explain(&self, claims: &Map<String, Value>) -> String {
        let _ = claims;
        todo!()
    }
}
