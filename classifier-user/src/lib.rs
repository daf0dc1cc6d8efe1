//! meshclass: compiles an Istio service registry into BPF maps and runs the TC classifier.

pub mod attach;
pub mod commands;
pub mod daemon;
pub mod dataplane;
pub mod model;
pub mod netlink;
pub mod packet;
pub mod plan;
pub mod registry;
pub mod settings;

/// The TC classifier object (classifier-ebpf), built for the BPF target by build.rs.
pub static CLASSIFIER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classifier"));
