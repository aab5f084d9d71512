//! Role → (methods, path patterns) grants; default deny.
//!
//! `allow <role> <methods> <paths>` rules are compiled into grants indexed by role, so a check
//! only looks at the grants of the roles the caller holds. Path patterns match the *normalized*
//! request path ([`crate::path::normalize`]: percent-decoded, no dot segments), case-sensitively:
//!
//! | pattern    | matches                                                    |
//! | ---------- | ---------------------------------------------------------- |
//! | `*`        | any path                                                   |
//! | `/items`   | exactly `/items`                                           |
//! | `/items/*` | `/items/` and everything below it, but not `/items` itself |
//! | `*.json`   | any path ending in `.json`                                 |
//!
//! Any other use of `*` is refused at load time, as is a pattern that could never match a
//! normalized path (dot segments, backslash, NUL).

use crate::config::AllowRule;
use crate::error::ConfigError;
use crate::roles::{RoleNames, RoleSet, check_role_name};

/// Compiled allow rules.
#[derive(Debug)]
pub(crate) struct Permissions {
    /// Grants by role index; roles without grants have an empty slice (or none past the end).
    by_role: Box<[Box<[Grant]>]>,
}

impl Permissions {
    /// Compiles `rules`; refuses unknown methods, malformed patterns and roles without a name.
    pub(crate) fn compile(rules: &[AllowRule], names: &RoleNames) -> Result<Self, ConfigError> {
        let mut by_role: Vec<Vec<Grant>> = Vec::new();
        by_role.resize_with(names.len(), Vec::new);
        for (i, rule) in rules.iter().enumerate() {
            check_role_name(&rule.role)
                .map_err(|m| ConfigError::new(format!("allow[{i}].role"), m))?;
            let role = names.index(&rule.role).ok_or_else(|| {
                ConfigError::new(
                    format!("allow[{i}].role"),
                    "role missing from the role table (RoleNames built from other rules)",
                )
            })?;
            let methods = Methods::compile(&rule.methods, i)?;
            if rule.paths.is_empty() {
                return Err(ConfigError::new(
                    format!("allow[{i}].paths"),
                    "at least one path pattern is required",
                ));
            }
            let paths = rule
                .paths
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    PathPattern::parse(p)
                        .map_err(|m| ConfigError::new(format!("allow[{i}].paths[{j}]"), m))
                })
                .collect::<Result<Box<[_]>, _>>()?;
            if role >= by_role.len() {
                by_role.resize_with(role + 1, Vec::new);
            }
            by_role[role].push(Grant { methods, paths });
        }
        Ok(Self {
            by_role: by_role.into_iter().map(Vec::into_boxed_slice).collect(),
        })
    }

    /// Whether any of `roles` may call `method` on the (already normalized) `path`.
    pub(crate) fn allows(&self, roles: &RoleSet, method: &str, path: &str) -> bool {
        if roles.is_empty() {
            return false;
        }
        roles.iter().any(|r| {
            self.by_role.get(r).is_some_and(|grants| {
                grants
                    .iter()
                    .any(|g| g.methods.matches(method) && g.paths.iter().any(|p| p.matches(path)))
            })
        })
    }
}

/// One `allow` rule, minus its role.
#[derive(Debug)]
struct Grant {
    /// Methods allowed.
    methods: Methods,
    /// Paths allowed; any may match.
    paths: Box<[PathPattern]>,
}

/// The methods of a grant.
#[derive(Debug, PartialEq, Eq)]
enum Methods {
    /// `*`: every method.
    Any,
    /// These methods, upper case, compared case-sensitively with the request's method.
    Only(Box<[Box<str>]>),
}

impl Methods {
    /// Compiles the methods of `allow[i]`: HTTP tokens (upper-cased) or `*`.
    fn compile(methods: &[String], i: usize) -> Result<Self, ConfigError> {
        if methods.is_empty() {
            return Err(ConfigError::new(
                format!("allow[{i}].methods"),
                "at least one method (or *) is required",
            ));
        }
        let mut only: Vec<Box<str>> = Vec::with_capacity(methods.len());
        let mut any = false;
        for (j, m) in methods.iter().enumerate() {
            if m == "*" {
                any = true;
                continue;
            }
            if m.is_empty() {
                return Err(ConfigError::new(
                    format!("allow[{i}].methods[{j}]"),
                    "method is empty",
                ));
            }
            if !m.bytes().all(is_method_char) {
                return Err(ConfigError::new(
                    format!("allow[{i}].methods[{j}]"),
                    "method must be an HTTP token (letters, digits, !#$%&'+-.^_`|~) or a lone *",
                ));
            }
            let m: Box<str> = m.to_ascii_uppercase().into();
            if !only.contains(&m) {
                only.push(m);
            }
        }
        Ok(if any {
            Self::Any
        } else {
            Self::Only(only.into_boxed_slice())
        })
    }

    /// Whether `method` is allowed.
    fn matches(&self, method: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(list) => list.iter().any(|m| **m == *method),
        }
    }
}

/// An RFC 9110 `tchar`, except `*` (only valid as a lone wildcard here).
fn is_method_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b)
}

/// A compiled path pattern.
#[derive(Debug, PartialEq, Eq)]
enum PathPattern {
    /// `*`.
    Any,
    /// `/items`: exactly this path.
    Exact(Box<str>),
    /// `/items/*`, stored as `/items/`: paths starting with it.
    Prefix(Box<str>),
    /// `*.json`, stored as `.json`: paths ending with it.
    Suffix(Box<str>),
}

/// Why a `*` was refused.
const MISPLACED_STAR: &str = "`*` may only be the whole pattern (`*`), a trailing `/*` (`/items/*`) or a leading `*` (`*.json`)";

impl PathPattern {
    /// Parses one configured pattern.
    fn parse(p: &str) -> Result<Self, &'static str> {
        if p == "*" {
            return Ok(Self::Any);
        }
        if p.is_empty() {
            return Err("path pattern is empty");
        }
        if !p.starts_with('/') && !p.starts_with('*') {
            return Err("path pattern must start with / or *");
        }
        if p.contains('\\') || p.contains('\0') {
            return Err("path pattern contains a backslash or NUL, which a request path never has");
        }
        let pattern = if let Some(rest) = p.strip_prefix('*') {
            if rest.contains('*') {
                return Err(MISPLACED_STAR);
            }
            // The first piece is the tail of a segment; only the following ones are whole.
            check_segments(rest.split('/').skip(1))?;
            Self::Suffix(rest.into())
        } else if let Some(prefix) = p.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(MISPLACED_STAR);
            }
            if !prefix.ends_with('/') {
                return Err(
                    "a prefix pattern must end in `/*` (`/items/*` matches below /items; `/items*` is refused)",
                );
            }
            check_segments(prefix.split('/'))?;
            Self::Prefix(prefix.into())
        } else if p.contains('*') {
            return Err(MISPLACED_STAR);
        } else {
            check_segments(p.split('/'))?;
            Self::Exact(p.into())
        };
        Ok(pattern)
    }

    /// Whether the normalized `path` matches.
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == &**p,
            Self::Prefix(p) => path.starts_with(&**p),
            Self::Suffix(s) => path.ends_with(&**s),
        }
    }
}

/// Refuses `.` and `..` segments, which a normalized path never contains.
fn check_segments<'a>(mut segments: impl Iterator<Item = &'a str>) -> Result<(), &'static str> {
    if segments.any(|s| s == "." || s == "..") {
        return Err(
            "path pattern has a `.` or `..` segment, which a normalized request path never has",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
