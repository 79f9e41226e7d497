//! streamedge: an HTTP caching edge node for HLS and DASH.

pub mod origin;
