//! Role → (methods, path patterns) grants; default deny. (STUB: being written.)
use crate::config::AllowRule;
use crate::error::ConfigError;
use crate::roles::{RoleNames, RoleSet};

/// Compiled allow rules.
#[derive(Debug)]
pub(crate) struct Permissions {}

impl Permissions {
    /// Compiles `rules`; refuses unknown methods, malformed patterns and roles without a name.
    pub(crate) fn compile(rules: &[AllowRule], names: &RoleNames) -> Result<Self, ConfigError> {
        let _ = (rules, names);
        todo!()
    }

    /// Whether any of `roles` may call `method` on the (already normalized) `path`.
    pub(crate) fn allows(&self, roles: &RoleSet, method: &str, path: &str) -> bool {
        let _ = (roles, method, path);
        todo!()
    }
}
