//! The reference model of docs/decision.md.
