//! A Cosmos DB REST request as the service sees it: which resource, which operation.
//!
//! Paths alternate resource type and name (`/dbs/{db}/colls/{coll}/docs/{id}`). An even
//! number of segments addresses one resource (an item request, signed with the full link); an
//! odd number addresses a feed (list, create, query; signed with the parent's link). Names are
//! URL-decoded before signing and authorizing, as the service does. Shapes this gateway does
//! not know are refused, never guessed.

use std::fmt;

/// The request facts the parser needs, borrowed for one call. Header values are raw (empty
/// when absent); the parser reads them strictly and the caller forwards the normalized flags
/// of [`ParsedRequest`], so the service sees exactly what was authorized.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RequestFacts<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The escaped path, without the query string (Go's `URL.EscapedPath()`).
    pub path: &'a str,
    /// `x-ms-documentdb-isquery`.
    pub is_query: &'a str,
    /// `Content-Type`.
    pub content_type: &'a str,
    /// `x-ms-documentdb-is-upsert`.
    pub is_upsert: &'a str,
    /// `x-ms-cosmos-is-batch-request` (a transactional batch).
    pub is_batch: &'a str,
    /// The body of a POST (the only method whose body changes what a request does).
    pub body: &'a [u8],
}

impl<'a> RequestFacts<'a> {
    /// Facts of a request with no special headers and no body.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            ..Self::default()
        }
    }

    /// The same facts with these header values and body.
    pub fn with_headers(
        self,
        is_query: &'a str,
        content_type: &'a str,
        is_upsert: &'a str,
        is_batch: &'a str,
        body: &'a [u8],
    ) -> Self {
        Self {
            is_query,
            content_type,
            is_upsert,
            is_batch,
            body,
            ..self
        }
    }
}

/// The request-kind flags the upstream must receive (set to `True` when on, removed when off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Flags {
    /// `x-ms-documentdb-isquery`.
    pub query: bool,
    /// `x-ms-documentdb-is-upsert`.
    pub upsert: bool,
    /// `x-ms-cosmos-is-batch-request`.
    pub batch: bool,
}

/// What a request does, in Cosmos DB's data-plane RBAC terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Metadata the SDKs read to start (account, database, container, partition key ranges):
    /// allowed for any role with a grant that reaches the resource.
    StartupMetadata,
    /// Needs every one of these data actions on the resource.
    Actions(crate::Actions),
    /// A management operation (create or delete a database or container, scripts, users,
    /// permissions): not part of the data plane, never forwarded.
    Management,
}

/// Where a request points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The account, or an account-wide feed (`/dbs`, `/offers`).
    Account,
    /// A database, or a feed inside one (`/dbs/{db}/colls`).
    Database(String),
    /// A container or anything inside one.
    Container {
        /// Database name.
        db: String,
        /// Container name.
        coll: String,
    },
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParsedRequest {
    /// What it does.
    pub operation: Operation,
    /// Where it points.
    pub target: Target,
    /// The resource type for signing (`dbs`, `colls`, `docs`, `pkranges`, ... or empty).
    pub resource_type: &'static str,
    /// The resource link for signing: URL-decoded names, no leading slash.
    pub resource_link: String,
    /// The kind flags to forward.
    pub flags: Flags,
}

/// Why a request was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// Resource types under a container this gateway knows.
const CONTAINER_CHILDREN: [&str; 6] = [
    "docs",
    "pkranges",
    "sprocs",
    "triggers",
    "udfs",
    "conflicts",
];

/// Parses one request. Every refusal names the reason.
pub fn parse(facts: &RequestFacts<'_>) -> Result<ParsedRequest, ParseError> {
    use crate::Actions as A;

    let flags = Flags {
        query: flag(facts.is_query)?,
        upsert: flag(facts.is_upsert)?,
        batch: flag(facts.is_batch)?,
    };
    let query_type = facts
        .content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/query+json"));
    if query_type != flags.query {
        return Err(ParseError(
            "ambiguous request: x-ms-documentdb-isquery and Content-Type application/query+json must come together",
        ));
    }
    let segments = split_path(facts.path)?;
    let seg = |i: usize| segments[i].as_str();
    let method = facts.method;
    let n = segments.len();
    // Type segments must be known, lower case, in their place.
    check_types(&segments)?;
    let link = |upto: usize| segments[..upto].join("/");
    let feed = n % 2 == 1;
    let resource_type: &'static str = match n {
        0 => "",
        _ => static_type(if feed { seg(n - 1) } else { seg(n - 2) }),
    };
    let resource_link = if feed { link(n - 1) } else { link(n) };
    let target = match n {
        0..=1 => Target::Account,
        2..=3 => Target::Database(seg(1).to_owned()),
        _ => Target::Container {
            db: seg(1).to_owned(),
            coll: seg(3).to_owned(),
        },
    };
    let read = method == "GET" || method == "HEAD";
    let operation = match (n, resource_type) {
        // GET / (the account), GET /dbs/{db}, GET /dbs/{db}/colls/{coll}.
        (0, _) | (2, "dbs") | (4, "colls") if read => Operation::StartupMetadata,
        // Listing databases, offers or containers: metadata of the enclosing scope.
        (1, "dbs" | "offers") | (3, "colls") if read => Operation::Actions(A::READ_METADATA),
        (0..=4, _) => Operation::Management,
        (5 | 6, "pkranges") if read => Operation::StartupMetadata,
        (5 | 6, "sprocs" | "triggers" | "udfs") if read => Operation::Actions(A::READ_METADATA),
        (6, "sprocs") if method == "POST" => Operation::Actions(A::EXECUTE_STORED_PROCEDURE),
        (5 | 6, "sprocs" | "triggers" | "udfs") => Operation::Management,
        (5, "conflicts") if read || (method == "POST" && flags.query) => {
            Operation::Actions(A::MANAGE_CONFLICTS)
        }
        (6, "conflicts") if read || method == "DELETE" => Operation::Actions(A::MANAGE_CONFLICTS),
        (5, "docs") => match method {
            "GET" | "HEAD" => Operation::Actions(A::READ_CHANGE_FEED),
            // A batch carries any mix of item operations in its body: it needs them all.
            "POST" if flags.batch => Operation::Actions(A::ITEMS_ALL),
            "POST" if flags.query => {
                if !holds_query(facts.body) {
                    return Err(ParseError("a query request must carry a query"));
                }
                Operation::Actions(A::EXECUTE_QUERY.union(A::READ_CHANGE_FEED))
            }
            // Some backends (the emulator) run any POST whose body has a `query` as a query.
            _ if holds_query(facts.body) => {
                return Err(ParseError(
                    "ambiguous request: a document with a top-level \"query\" string is read as a query by some backends",
                ));
            }
            "POST" if flags.upsert => Operation::Actions(A::ITEMS_UPSERT),
            "POST" => Operation::Actions(A::ITEMS_CREATE),
            _ => return Err(ParseError("method not allowed on a document feed")),
        },
        (6, "docs") => match method {
            "GET" | "HEAD" => Operation::Actions(A::ITEMS_READ),
            // PATCH is a partial replace.
            "PUT" | "PATCH" => Operation::Actions(A::ITEMS_REPLACE),
            "DELETE" => Operation::Actions(A::ITEMS_DELETE),
            _ => return Err(ParseError("method not allowed on a document")),
        },
        _ => return Err(ParseError("unsupported method for this resource")),
    };
    if let Operation::Management = operation
        && !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE")
    {
        return Err(ParseError("unsupported method"));
    }
    // The kind flags only mean something on a POST to a feed; anywhere else they are refused
    // rather than forwarded for a backend to read its own way.
    let kind_flag_ok = method == "POST" && n % 2 == 1;
    if (flags.upsert || flags.batch || flags.query) && !kind_flag_ok {
        return Err(ParseError(
            "request-kind header on a request it does not apply to",
        ));
    }
    if flags.batch && (flags.query || flags.upsert) {
        return Err(ParseError("ambiguous request: batch with query or upsert"));
    }
    Ok(ParsedRequest {
        operation,
        target,
        resource_type,
        resource_link,
        flags,
    })
}

/// A boolean request header: absent, `true` or `false` (any case). Anything else is refused,
/// since backends parse such values differently (`1`, `t`, `yes`).
fn flag(value: &str) -> Result<bool, ParseError> {
    if value.is_empty() || value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else {
        Err(ParseError(
            "a boolean request header holds neither true nor false",
        ))
    }
}

/// Whether `body` is a JSON object with a top-level string `query` (a SQL query body).
fn holds_query(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        query: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(body)
        .is_ok_and(|p| matches!(p.query, Some(serde_json::Value::String(_))))
}

/// Checks the type segments (even positions) against the known tree.
fn check_types(segments: &[String]) -> Result<(), ParseError> {
    for (i, s) in segments.iter().enumerate().step_by(2) {
        let ok = match i {
            // `/offers` is an account-wide feed; its items are management.
            0 => s == "dbs" || (s == "offers" && segments.len() == 1),
            2 => s == "colls",
            4 => CONTAINER_CHILDREN.contains(&s.as_str()),
            _ => false,
        };
        if !ok {
            return Err(ParseError("unknown resource path"));
        }
    }
    Ok(())
}

fn static_type(s: &str) -> &'static str {
    ["dbs", "offers", "colls"]
        .into_iter()
        .chain(CONTAINER_CHILDREN)
        .find(|t| *t == s)
        .unwrap_or("")
}

/// Splits an escaped path into URL-decoded segments. One trailing slash is allowed (the Python
/// SDK sends `/dbs/d/colls/c/docs/`); empty, dot and undecodable segments are refused, as are
/// names that decode to a slash, a backslash, `?`, `#` or a control character (Cosmos forbids
/// them in ids, and they would make the signed link ambiguous).
fn split_path(path: &str) -> Result<Vec<String>, ParseError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ParseError("path must start with /"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String, ParseError> {
    if raw.is_empty() {
        return Err(ParseError("empty path segment"));
    }
    let out = crate::percent::percent_decode(raw.as_bytes())
        .ok_or(ParseError("bad percent-encoding in path"))?;
    let s = String::from_utf8(out).map_err(|_| ParseError("path is not UTF-8"))?;
    if s == "." || s == ".." {
        return Err(ParseError("dot segment in path"));
    }
    if s.chars()
        .any(|c| matches!(c, '/' | '\\' | '?' | '#') || c.is_control())
    {
        return Err(ParseError("resource name holds a forbidden character"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
