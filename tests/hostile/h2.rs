//! HTTP/2 abuse.
