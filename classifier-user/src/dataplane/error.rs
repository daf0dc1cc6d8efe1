//! Errors of the dataplane loader and map writer.

use std::path::PathBuf;

/// What can go wrong loading the program or writing its maps.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The embedded object is empty (built with `AYA_BUILD_SKIP`).
    #[error("the classifier object is empty: this binary was built with AYA_BUILD_SKIP=1")]
    EmptyObject,
    /// The object did not load (maps created, relocations).
    #[error("loading the classifier object: {0}")]
    Load(#[from] Box<aya::EbpfError>),
    /// A program was refused (typically by the verifier; the log is in the message).
    #[error("loading program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The object has no program of this name.
    #[error("the classifier object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The object (or pin directory) has no map of this name.
    #[error("map `{0}` is missing")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Pinning a map failed.
    #[error("pinning map `{map}` at {path}: {source}")]
    Pin {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// The plan needs more entries than a map holds; nothing was written.
    #[error(
        "the plan does not fit: map `{map}` needs {needed} entries, has {available} \
         (`meshclass run {}` sets it when the dataplane is loaded)",
        size_flag(map)
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        available: usize,
    },
    /// Two different names hash alike on one port; nothing was written.
    #[error("names `{a}` and `{b}` have the same 64-bit hash on port {port}; the plan is refused")]
    HashCollision { a: String, b: String, port: u16 },
    /// A name longer than the kernel matches.
    #[error("name `{name}` is {len} bytes long; at most {max} are matched")]
    NameTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    /// Pinned maps of another layout version.
    #[error("pinned maps have layout version {found}, this program uses {expected}")]
    Layout { found: u32, expected: u32 },
    /// BPF_PROG_TEST_RUN failed.
    #[error("test run: {0}")]
    TestRun(#[source] Box<aya::programs::ProgramError>),
    /// A program's file descriptor could not be duplicated.
    #[error("duplicating a program fd: {0}")]
    Fd(#[source] std::io::Error),
    /// A port entry of a protocol the ports table has no slots for (TCP and UDP only).
    #[error("port entries are for TCP and UDP, not protocol {0}")]
    PortProtocol(u8),
    /// A table written through a shared mapping could not be mapped.
    #[error("mapping `{map}` into memory: {source}")]
    Shared {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The exact table's layout does not fit its map, or a plan's key found no room in it.
    #[error("exact table: {0}")]
    Exact(String),
    /// The name table's layout does not fit its maps, or a plan's key found no room in it.
    #[error("name table: {0}")]
    Names(String),
    /// The kernel's jiffy clock could not be measured at load.
    #[error("measuring the kernel's tick: {0}")]
    Clock(String),
    /// Per-CPU counters could not be summed.
    #[error("counting CPUs: {0}")]
    Cpus(#[source] std::io::Error),
}

impl DataplaneError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map {
            map,
            source: Box::new(source),
        }
    }
}

/// The `meshclass run` flag that sizes map `map`.
fn size_flag(map: &str) -> &'static str {
    use classifier_common::maps;
    match map {
        maps::EXACT => "--max-exact",
        maps::CIDR => "--max-cidr",
        maps::ENTRY_HITS => "--max-entry-ids",
        maps::NAMES | maps::NAME_INDEX => "--max-names",
        _ => "--max-* (see meshclass run --help)",
    }
}
