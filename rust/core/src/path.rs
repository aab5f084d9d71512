//! Request path normalization before permission checks. (STUB: being written.)
use std::borrow::Cow;

/// Percent-decodes the escaped request path for matching. Refuses (with a short reason) what
/// could make the upstream see a different path than the one we checked: encoded `/`, `\` or
/// NUL, dot segments (`.`/`..`, also encoded), a backslash, or a path not starting with `/`.
pub(crate) fn normalize(escaped: &str) -> Result<Cow<'_, str>, &'static str> {
    let _ = escaped;
    todo!()
}
