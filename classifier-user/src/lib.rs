//! meshclass: compiles an Istio service registry into BPF maps and runs the TC classifier.

pub mod commands;
pub mod plan;
pub mod settings;
