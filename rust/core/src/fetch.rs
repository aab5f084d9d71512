//! Fetching discovery documents and key sets. (STUB: being written.)
use std::fmt::Debug;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// Anything.
    Other(String),
}

/// Fetches a URL's body with size and time caps.
pub trait KeyFetcher: Send + Sync + Debug {
    /// GET `url`.
    fn get(&self, url: &str) -> Result<Vec<u8>, FetchError>;
}

/// HTTP fetcher.
#[derive(Debug)]
pub struct HttpFetcher;
