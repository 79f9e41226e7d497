//! The rule types a configuration carries — cache-key, signed-URL and compression rules —
//! defined here so the modules that apply them depend on the configuration, not the reverse.

/// Which query parameters of a request belong to its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryPolicy {
    /// Keep every parameter.
    All,
    /// Keep only these names.
    Allow(Vec<String>),
    /// Keep all but these names.
    Deny(Vec<String>),
}

/// A key rule for requests under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub prefix: String,
    pub query: QueryPolicy,
}

/// One protected path prefix.
#[derive(Debug, Clone)]
pub struct SigningRule {
    pub prefix: String,
    /// Accepted keys; the first signs tokens made by `streamedge sign`.
    pub keys: Vec<Vec<u8>>,
    /// Query parameter carrying the token.
    pub param: String,
    /// Also accept the token as the first path segment after the prefix.
    pub path_segment: bool,
}

/// Compression settings.
#[derive(Debug, Clone)]
pub struct CompressConfig {
    pub enabled: bool,
    pub brotli_quality: u32,
    pub gzip_level: u32,
    pub min_size: u64,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            enabled: true,
            brotli_quality: 4,
            gzip_level: 6,
            min_size: 512,
        }
    }
}
