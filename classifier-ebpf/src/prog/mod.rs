//! The program's modules; see docs/decision.md for what they implement together.

pub mod act;
pub mod classify;
pub mod clock;
pub mod cnt;
pub mod exact;
pub mod flows;
pub mod http;
pub mod inbound;
pub mod maps;
pub mod names;
pub mod pkt;
pub mod ports;
pub mod split;
pub mod tls;
