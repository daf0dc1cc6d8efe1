//! The service registry: reading Istio resources, validating them as Istio's admission webhook
//! does, and compiling them into the dataplane [`Plan`](crate::plan::Plan).
//!
//! Reading goes in two stages: YAML into a positioned tree ([`yaml`]), then serde types that
//! mirror the YAML ([`raw`]), which [`validate`] turns into the checked [`model`]. Every problem
//! is a [`Diagnostic`] naming file, line, column, resource and field path.

pub mod compile;
pub mod de;
pub mod diag;
pub mod model;
pub mod path;
pub mod raw;
pub mod source;
pub mod validate;
pub mod yaml;

pub use compile::compile;
pub use diag::{Diagnostic, Problem, Severity};
pub use model::Registry;
pub use source::{load_bytes, load_paths, load_str, Loaded, ReadError};
pub use yaml::Limits;
