//! The `meshclass` subcommands. Each returns the process exit code.

pub mod compile;
pub mod config;
pub mod detach;
pub mod explain;
pub mod flows;
pub mod inspect;
pub mod run;
pub mod validate;
