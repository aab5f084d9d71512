//! Claim-to-role mapping, compiled once per config.
//!
//! Role rules (`role admin claim groups contains admins claim email suffix @example.com`) are
//! compiled into an index keyed by claim path and value, so that the work per token depends on
//! the token's size and on the rules that actually fire, not on how many rules the config has:
//!
//! 1. Every distinct claim path the rules name is resolved once per token.
//! 2. Each string the token carries at that path (the string itself, each element of an array,
//!    and each space-separated word of a string for `has`) is looked up in a hash map of the
//!    configured values, which yields the ids of the conditions it satisfies. `prefix` and
//!    `suffix` conditions are indexed by value length, so they cost one lookup per distinct
//!    configured length, and only on the paths that have them.
//! 3. Satisfied conditions set bits in a small scratch bitset. Every rule is anchored on one of
//!    its conditions (the most selective one); only rules whose anchor fired are looked at, and
//!    a rule grants its role when all its condition bits are set.
//!
//! Matching is strict: only JSON strings (or string elements of arrays) ever match; numbers,
//! booleans, objects and `null` never do, whatever the configured value looks like.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::config::{AllowRule, ClaimOp, RoleRule};
use crate::error::{ConfigError, push_for_log};
use crate::json::{Json, JsonObject};

/// Role names interned to small indices, from role rules and allow rules alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleNames {
    /// Names by index, in first-seen order (role rules first, then allow rules).
    names: Vec<Arc<str>>,
    /// Index of each name in `names`.
    by_name: HashMap<Arc<str>, usize>,
}

impl RoleNames {
    /// Interns every role named in `rules` and `allow`, in first-seen order (`rules` first).
    ///
    /// Empty names are skipped: they are refused when the rules are compiled
    /// ([`RoleMatcher::compile`], `Permissions::compile`), which names the faulty rule.
    pub(crate) fn new(rules: &[RoleRule], allow: &[AllowRule]) -> Self {
        let mut out = Self::default();
        let all = rules
            .iter()
            .map(|r| r.role.as_str())
            .chain(allow.iter().map(|a| a.role.as_str()));
        for name in all {
            if name.is_empty() || out.by_name.contains_key(name) {
                continue;
            }
            let name: Arc<str> = Arc::from(name);
            out.by_name.insert(Arc::clone(&name), out.names.len());
            out.names.push(name);
        }
        out
    }

    /// Index of `name`, if known.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Name of role `i`. Panics if `i` is not below [`Self::len`]; indices come from this table.
    pub(crate) fn name(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }

    /// Number of roles.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// Checks a role name from the config: non-empty, and safe to put in the comma-separated roles
/// header (no commas, no control characters, no surrounding whitespace).
pub(crate) fn check_role_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("role name is empty");
    }
    if name.contains(',') {
        return Err("role name must not contain a comma (roles are sent comma-separated)");
    }
    if name.chars().any(char::is_control) {
        return Err("role name must not contain control characters");
    }
    if name.trim() != name {
        return Err("role name must not start or end with whitespace");
    }
    Ok(())
}

/// A set of role indices (a bitset sized for the config's role count).
///
/// Equality and hashing ignore trailing zero words, so two sets with the same members are equal
/// however they were built.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleSet {
    /// Bit `i % 64` of word `i / 64` is set when role `i` is in the set.
    bits: Vec<u64>,
}

impl RoleSet {
    /// An empty set with room for `roles` roles, so inserting them never reallocates.
    pub(crate) fn with_capacity(roles: usize) -> Self {
        Self {
            bits: vec![0; roles.div_ceil(64)],
        }
    }

    /// Adds role `i`.
    pub(crate) fn insert(&mut self, i: usize) {
        let word = i / 64;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (i % 64);
    }

    /// Whether role `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// Role indices in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits
            .iter()
            .enumerate()
            .flat_map(|(w, &word)| Ones(word).map(move |b| w * 64 + b))
    }

    /// The words up to the last non-zero one (the canonical form for `Eq` and `Hash`).
    fn trimmed(&self) -> &[u64] {
        let len = self.bits.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1);
        &self.bits[..len]
    }
}

impl PartialEq for RoleSet {
    fn eq(&self, other: &Self) -> bool {
        self.trimmed() == other.trimmed()
    }
}

impl Eq for RoleSet {}

impl Hash for RoleSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.trimmed().hash(state);
    }
}

/// Iterator over the positions of the set bits of one word, lowest first.
struct Ones(u64);

impl Iterator for Ones {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

/// Compiled role rules.
#[derive(Debug)]
pub(crate) struct RoleMatcher {
    /// Every distinct claim path the rules reference, sorted by configured name.
    paths: Box<[PathIndex]>,
    /// The rules, by rule id.
    rules: Box<[CompiledRule]>,
    /// For each condition id, the ids of the rules anchored on it.
    anchored: Box<[Box<[u32]>]>,
    /// Number of distinct conditions (bits in the per-call scratch set).
    cond_count: usize,
    /// Number of roles in the [`RoleNames`] table the rules were compiled against.
    role_count: usize,
}

/// Scratch words kept on the stack by [`RoleMatcher::roles_for`] (4096 conditions).
const STACK_WORDS: usize = 64;

/// Most values per claim shown by [`RoleMatcher::explain`].
const EXPLAIN_MAX_VALUES: usize = 10;

impl RoleMatcher {
    /// Compiles `rules`; refuses empty role names, empty conditions and empty values.
    ///
    /// Also refused, naming `roles[i]…`: role names unfit for the roles header (comma, control
    /// characters, surrounding whitespace), empty claim names or path segments (`a..b`), and
    /// `has` values containing a space. Every role must be in `names`.
    pub(crate) fn compile(rules: &[RoleRule], names: &RoleNames) -> Result<Self, ConfigError> {
        let mut paths: Vec<PathIndex> = Vec::new();
        let mut path_ids: HashMap<&str, usize> = HashMap::new();
        let mut cond_ids: HashMap<(usize, CondKind, &str), u32> = HashMap::new();
        // How many rules reference each condition; picks each rule's anchor.
        let mut cond_uses: Vec<u32> = Vec::new();
        let mut cond_kinds: Vec<CondKind> = Vec::new();
        if u32::try_from(rules.len()).is_err() {
            return Err(ConfigError::new("roles", "too many role rules"));
        }
        let mut compiled = Vec::with_capacity(rules.len());

        for (i, rule) in rules.iter().enumerate() {
            check_role_name(&rule.role)
                .map_err(|m| ConfigError::new(format!("roles[{i}].role"), m))?;
            let role = names.index(&rule.role).ok_or_else(|| {
                ConfigError::new(
                    format!("roles[{i}].role"),
                    "role missing from the role table (RoleNames built from other rules)",
                )
            })?;
            if rule.when.is_empty() {
                return Err(ConfigError::new(
                    format!("roles[{i}].when"),
                    "a role rule needs at least one claim condition",
                ));
            }
            let mut conds: Vec<u32> = Vec::with_capacity(rule.when.len());
            for (j, c) in rule.when.iter().enumerate() {
                let at = |field: &str| format!("roles[{i}].when[{j}].{field}");
                let path =
                    ClaimPath::parse(&c.claim).map_err(|m| ConfigError::new(at("claim"), m))?;
                let kind = CondKind::from(c.op);
                check_value(kind, &c.value).map_err(|m| ConfigError::new(at("value"), m))?;

                let path_id = *path_ids.entry(c.claim.as_str()).or_insert_with(|| {
                    paths.push(PathIndex::new(&c.claim, path));
                    paths.len() - 1
                });
                let next_id = u32::try_from(cond_kinds.len()).map_err(|_| {
                    ConfigError::new(at("value"), "too many distinct claim conditions")
                })?;
                let id = match cond_ids.entry((path_id, kind, c.value.as_str())) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        paths[path_id].add(kind, &c.value, next_id);
                        cond_kinds.push(kind);
                        cond_uses.push(0);
                        *e.insert(next_id)
                    }
                };
                if !conds.contains(&id) {
                    conds.push(id);
                    cond_uses[id as usize] += 1;
                }
            }
            compiled.push(CompiledRule {
                role,
                conds: conds.into_boxed_slice(),
            });
        }

        let mut anchored: Vec<Vec<u32>> = vec![Vec::new(); cond_kinds.len()];
        for (r, rule) in compiled.iter().enumerate() {
            // Anchor on the condition least likely to fire for unrelated tokens: a hashed value
            // (equals/contains/has) over an affix, then the one the fewest rules share, so a
            // condition common to many rules (`iss equals X`) does not wake them all up.
            let anchor = rule
                .conds
                .iter()
                .copied()
                .min_by_key(|&c| (cond_kinds[c as usize].is_affix(), cond_uses[c as usize]));
            // Invariant: `rule.when` was checked non-empty, so every rule has a condition.
            let Some(anchor) = anchor else { continue };
            // Invariant: `rules.len()` was checked to fit in u32 above.
            anchored[anchor as usize].push(r as u32);
        }

        // Path ids are not kept past this point, so the paths can be reordered for `explain`.
        paths.sort_by(|a, b| a.name.cmp(&b.name));

        Ok(Self {
            paths: paths.into_boxed_slice(),
            rules: compiled.into_boxed_slice(),
            anchored: anchored.into_iter().map(Vec::into_boxed_slice).collect(),
            cond_count: cond_kinds.len(),
            role_count: names.len(),
        })
    }

    /// The roles `claims` earn.
    pub(crate) fn roles_for(&self, claims: &JsonObject<'_>) -> RoleSet {
        let mut out = RoleSet::with_capacity(self.role_count);
        if self.rules.is_empty() {
            return out;
        }
        let words = self.cond_count.div_ceil(64);
        let mut stack = [0u64; STACK_WORDS];
        let mut heap = Vec::new();
        let fired: &mut [u64] = if words <= STACK_WORDS {
            &mut stack[..words]
        } else {
            heap.resize(words, 0);
            &mut heap
        };

        for path in &self.paths {
            if let Some(v) = path.path.resolve(claims) {
                path.eval(v, fired);
            }
        }

        for (w, &word) in fired.iter().enumerate() {
            for b in Ones(word) {
                // Invariant: only condition ids below `cond_count` are ever set, and `anchored`
                // has one entry per condition; rule ids in it index `rules`.
                for &r in &self.anchored[w * 64 + b] {
                    let rule = &self.rules[r as usize];
                    if !out.contains(rule.role) && rule.conds.iter().all(|&c| bit(fired, c)) {
                        out.insert(rule.role);
                    }
                }
            }
        }
        out
    }

    /// For denial logs: the values of the claims the rules look at, e.g. `groups=[a,b] scope=[read]`
    /// (truncated; claim values, never token bytes).
    ///
    /// One `name=…` per distinct claim path, sorted by path: `[v1,v2]` lists the string values
    /// (each cut to 64 characters, control characters dropped, at most 10 then `…`), `<absent>`
    /// when the claim is missing, and `<number>`, `<bool>`, `<object>` or `<null>` when it holds
    /// something that can never match.
    pub(crate) fn explain(&self, claims: &JsonObject<'_>) -> String {
        if self.paths.is_empty() {
            return String::new();
        }
        // Sized for a usual summary (`groups=[a,b,c]`), so it is not regrown push by push.
        let mut out = String::with_capacity(128);
        for path in &self.paths {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&path.name);
            out.push('=');
            match path.path.resolve(claims) {
                None => out.push_str("<absent>"),
                Some(Json::String(s)) => {
                    out.push('[');
                    push_for_log(&mut out, s);
                    out.push(']');
                }
                Some(Json::Array(items)) => {
                    out.push('[');
                    let strings = items.iter().filter_map(Json::as_str);
                    for (k, s) in strings.enumerate() {
                        if k > 0 {
                            out.push(',');
                        }
                        if k == EXPLAIN_MAX_VALUES {
                            out.push('…');
                            break;
                        }
                        push_for_log(&mut out, s);
                    }
                    out.push(']');
                }
                Some(Json::Number(_)) => out.push_str("<number>"),
                Some(Json::Bool(_)) => out.push_str("<bool>"),
                Some(Json::Object(_)) => out.push_str("<object>"),
                Some(Json::Null) => out.push_str("<null>"),
            }
        }
        out
    }
}

/// Whether condition `c` is set in `bits`.
fn bit(bits: &[u64], c: u32) -> bool {
    let c = c as usize;
    bits.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0)
}

/// Sets every condition in `conds`.
fn set_all(bits: &mut [u64], conds: &[u32]) {
    for &c in conds {
        let c = c as usize;
        // Invariant: `bits` has a bit for every condition id (sized from `cond_count`).
        bits[c / 64] |= 1 << (c % 64);
    }
}

/// Checks a condition's operand.
fn check_value(kind: CondKind, value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("value is empty");
    }
    if kind == CondKind::Has && value.contains(' ') {
        return Err(
            "a `has` value is one word of a space-separated list; it cannot contain a space",
        );
    }
    Ok(())
}

/// One compiled rule.
#[derive(Debug)]
struct CompiledRule {
    /// The role granted.
    role: usize,
    /// The condition ids that must all hold (deduplicated).
    conds: Box<[u32]>,
}

/// The test a condition applies, after merging the ops that behave alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CondKind {
    /// `equals` and `contains`: a string equal to the value, or an array with such an element.
    Equals,
    /// `has`: a space-separated string with the value as a word, or an array containing it.
    Has,
    /// `prefix`: the string, or a string element, starts with the value.
    Prefix,
    /// `suffix`: the string, or a string element, ends with the value.
    Suffix,
}

impl CondKind {
    /// Whether this is a prefix or suffix test (matched by scanning, not by one lookup).
    fn is_affix(self) -> bool {
        matches!(self, Self::Prefix | Self::Suffix)
    }
}

impl From<ClaimOp> for CondKind {
    fn from(op: ClaimOp) -> Self {
        match op {
            ClaimOp::Equals | ClaimOp::Contains => Self::Equals,
            ClaimOp::Has => Self::Has,
            ClaimOp::Prefix => Self::Prefix,
            ClaimOp::Suffix => Self::Suffix,
        }
    }
}

/// Where a claim lives in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClaimPath {
    /// A top-level key taken literally (Auth0 namespaced claims: `https://example.com/roles`).
    Literal(Box<str>),
    /// Keys into nested objects (`realm_access.roles`; a name without dots is one key).
    Nested(Box<[Box<str>]>),
}

impl ClaimPath {
    /// Parses a configured claim name.
    fn parse(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() {
            return Err("claim name is empty");
        }
        if name.starts_with("http://") || name.starts_with("https://") {
            return Ok(Self::Literal(name.into()));
        }
        let segments: Box<[Box<str>]> = name.split('.').map(Box::from).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err("claim path has an empty segment (leading, trailing or doubled dot)");
        }
        Ok(Self::Nested(segments))
    }

    /// The value at this path, if every step exists (intermediate steps must be objects).
    fn resolve<'a>(&self, claims: &'a JsonObject<'_>) -> Option<&'a Json<'a>> {
        match self {
            Self::Literal(key) => claims.get(key),
            Self::Nested(segments) => {
                let (first, rest) = segments.split_first()?;
                let mut v = claims.get(first)?;
                for s in rest {
                    v = v.as_object()?.get(s)?;
                }
                Some(v)
            }
        }
    }
}

/// The conditions on one claim path, indexed by value.
#[derive(Debug)]
struct PathIndex {
    /// The claim name as configured (for [`RoleMatcher::explain`]).
    name: Box<str>,
    /// Where the claim lives.
    path: ClaimPath,
    /// Values of `equals`/`contains`/`has` conditions.
    exact: HashMap<Box<str>, Hits>,
    /// Whether any `has` condition is on this path (scalar strings are then split into words).
    has_words: bool,
    /// `prefix` conditions.
    prefix: AffixIndex,
    /// `suffix` conditions.
    suffix: AffixIndex,
}

impl PathIndex {
    /// An index with no conditions yet.
    fn new(name: &str, path: ClaimPath) -> Self {
        Self {
            name: name.into(),
            path,
            exact: HashMap::new(),
            has_words: false,
            prefix: AffixIndex::default(),
            suffix: AffixIndex::default(),
        }
    }

    /// Adds condition `id`.
    fn add(&mut self, kind: CondKind, value: &str, id: u32) {
        match kind {
            CondKind::Equals => self.exact.entry(value.into()).or_default().equals.push(id),
            CondKind::Has => {
                self.has_words = true;
                self.exact.entry(value.into()).or_default().has.push(id);
            }
            CondKind::Prefix => self.prefix.add(value, id),
            CondKind::Suffix => self.suffix.add(value, id),
        }
    }

    /// Sets the conditions `v` satisfies. Only strings and string elements of arrays count.
    fn eval(&self, v: &Json<'_>, fired: &mut [u64]) {
        match v {
            Json::String(s) => self.eval_str(s, true, fired),
            Json::Array(items) => {
                for item in items {
                    if let Json::String(s) = item {
                        self.eval_str(s, false, fired);
                    }
                }
            }
            _ => {}
        }
    }

    /// Sets the conditions string `s` satisfies; `scalar` when it is the claim itself rather
    /// than an array element (only then is it a space-separated list for `has`).
    fn eval_str(&self, s: &str, scalar: bool, fired: &mut [u64]) {
        if !self.exact.is_empty() {
            // `has` values contain no space, so a whole string with spaces can only hit
            // `equals` entries; one without spaces is its own single word.
            if let Some(h) = self.exact.get(s) {
                set_all(fired, &h.equals);
                set_all(fired, &h.has);
            }
            if scalar && self.has_words && s.contains(' ') {
                for word in s.split(' ').filter(|w| !w.is_empty()) {
                    if let Some(h) = self.exact.get(word) {
                        set_all(fired, &h.has);
                    }
                }
            }
        }
        self.prefix.eval(s, fired, |s, n| s.get(..n));
        self.suffix.eval(s, fired, |s, n| s.get(s.len() - n..));
    }
}

/// The conditions hit by one exact string.
#[derive(Debug, Default)]
struct Hits {
    /// `equals`/`contains` conditions.
    equals: Vec<u32>,
    /// `has` conditions.
    has: Vec<u32>,
}

/// `prefix` or `suffix` conditions of one path: the values by length, so testing a string costs
/// one lookup per distinct configured length instead of one comparison per condition.
#[derive(Debug, Default)]
struct AffixIndex {
    /// Distinct value lengths in bytes, ascending.
    lens: Vec<usize>,
    /// Conditions by value.
    by_value: HashMap<Box<str>, Vec<u32>>,
}

impl AffixIndex {
    /// Adds condition `id` with operand `value`.
    fn add(&mut self, value: &str, id: u32) {
        if let Err(at) = self.lens.binary_search(&value.len()) {
            self.lens.insert(at, value.len());
        }
        self.by_value.entry(value.into()).or_default().push(id);
    }

    /// Sets the conditions whose value is the `cut(s, len)` part of `s` (its start or end);
    /// `cut` returns `None` when `len` is not on a character boundary.
    fn eval(&self, s: &str, fired: &mut [u64], cut: impl Fn(&str, usize) -> Option<&str>) {
        for &n in &self.lens {
            if n > s.len() {
                break;
            }
            if let Some(hits) = cut(s, n).and_then(|part| self.by_value.get(part)) {
                set_all(fired, hits);
            }
        }
    }
}

#[cfg(test)]
mod tests;
