//! The maps, as named in `classifier_common::maps`. Capacities here are defaults; user space
//! sets the real ones at load time.

use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    Global,
};
use classifier_common::{
    capacity, jump, CidrData, Control, CpuCounts, EntryValue, ExactBucket, FlowBucket, FlowKey,
    Layout, NameBucket, NameRecord, PendingValue, PortSlot, PortValue, FLOW_WAYS, MAX_NAME_LEN,
    PORT_SLOTS,
};

use super::pkt::Pkt;

/// The generation in force and both generations' settings (`Control`): one lookup a packet.
#[map(name = "CONTROL")]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

/// The layout stamp: user space reads it back after a restart; the program reads none of it
/// (the tables' sizes and seeds are the globals below, the clock is in each `Config`).
#[map(name = "LAYOUT")]
pub static LAYOUT: Array<Layout> = Array::with_max_entries(1, 0);

// The tables' sizes and hash seeds (`classifier_common::globals`): set at load, read by the
// verifier as constants. Zero (never loaded so) would put every flow in bucket 0.
#[no_mangle]
pub static FLOW_MASK: Global<u32> = Global::new(0);
#[no_mangle]
pub static FLOW_SEED: Global<u64> = Global::new(0);
#[no_mangle]
pub static EXACT_BUCKETS: Global<u32> = Global::new(2);
#[no_mangle]
pub static EXACT_SEED: Global<u64> = Global::new(0);
#[no_mangle]
pub static NAME_BUCKETS: Global<u32> = Global::new(2);
#[no_mangle]
pub static NAME_SEED: Global<u64> = Global::new(0);

/// The exact table (exact.rs): buckets of `EXACT_WAYS` slots, written by user space through a
/// shared mapping (`BPF_F_MMAPABLE`), `Layout::exact_buckets` of them.
#[map(name = "EXACT")]
pub static EXACT: Array<ExactBucket> =
    Array::with_max_entries(2 * capacity::EXACT / 3, aya_ebpf::bindings::BPF_F_MMAPABLE);

#[map(name = "CIDR")]
pub static CIDR: LpmTrie<CidrData, EntryValue> = LpmTrie::with_max_entries(2 * capacity::CIDR, 0);

/// The ports table (ports.rs): one slot per (generation, protocol, port), written by user space
/// through a shared mapping (`BPF_F_MMAPABLE`).
#[map(name = "PORTS")]
pub static PORTS: Array<PortSlot> =
    Array::with_max_entries(PORT_SLOTS, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// The name entries' values (names.rs): slots the name index points at, written by user space
/// through a shared mapping (`BPF_F_MMAPABLE`), both generations.
#[map(name = "NAMES")]
pub static NAMES: Array<NameRecord> =
    Array::with_max_entries(2 * capacity::NAMES, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// The name index (names.rs): buckets of `NAME_WAYS` slots, a cuckoo hash like `EXACT`,
/// `Layout::name_buckets` of them.
#[map(name = "NAME_INDEX")]
pub static NAME_INDEX: Array<NameBucket> =
    Array::with_max_entries(2 * capacity::NAMES / 3, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// The flow table (flows.rs): buckets of `FLOW_WAYS` slots, a power of two of them
/// (`Layout::flow_mask`).
#[map(name = "FLOWS")]
pub static FLOWS: Array<FlowBucket> =
    Array::with_max_entries(capacity::FLOWS / FLOW_WAYS as u32, 0);

#[map(name = "PENDING")]
pub static PENDING: LruHashMap<FlowKey, PendingValue> =
    LruHashMap::with_max_entries(capacity::PENDING, 0);

/// Each CPU's counters and entry-hit cache (`CpuCounts`): one element.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<CpuCounts> = PerCpuArray::with_max_entries(1, 0);

/// Hits per entry id, shared by all CPUs (atomic adds of what the CPUs' hit caches held); user
/// space reads it through a shared mapping.
#[map(name = "ENTRY_HITS")]
pub static ENTRY_HITS: Array<u64> =
    Array::with_max_entries(capacity::ENTRY_IDS, aya_ebpf::bindings::BPF_F_MMAPABLE);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Size of the payload window copied for HTTP/1.x and HTTP/2 parsing.
pub const WINDOW: usize = classifier_common::PAYLOAD_WINDOW;
/// Size of the name buffer: a suffix starts below `MAX_NAME_LEN` and is compared in 8-byte
/// chunks, so reads reach up to twice the name length plus one chunk.
pub const NAME_BUF: usize = 2 * MAX_NAME_LEN + 8;

/// Words of an `Event` before its name.
pub const EVENT_HEAD_WORDS: usize = 8;
const _: () =
    assert!(core::mem::offset_of!(classifier_common::Event, name) == 8 * EVENT_HEAD_WORDS);
const _: () = assert!(core::mem::offset_of!(Scratch, name) == 8 * EVENT_HEAD_WORDS);
const _: () = assert!(size_of::<classifier_common::Event>() <= 8 * EVENT_HEAD_WORDS + NAME_BUF);

/// Most `*.` suffix candidates of one name: a dot count below 64 (`PortValue::suffix_labels`
/// is a 64-bit mask of label counts).
pub const MAX_CANDIDATES: usize = 64;

/// Per-CPU working memory (the stack has only 512 bytes). 8-aligned, so that the name is
/// read and written in aligned 8-byte words.
#[repr(C, align(8))]
pub struct Scratch {
    /// The header of a decision event (`Event` up to its name): with `name` right after it,
    /// the two are an `Event` sent with one `bpf_ringbuf_output`, the name not copied.
    pub ev_head: [u64; EVENT_HEAD_WORDS],
    /// The name being matched, zero after its end; lower-cased by the lookup's hash pass.
    pub name: [u8; NAME_BUF],
    /// Where the `*.` suffix candidates of `name` start (at their dot), longest last
    /// (`LoopState::ncand` of them).
    pub cand: [u64; MAX_CANDIDATES],
    /// The hash pass's state after each 8-byte step from the end of `name`
    /// (`classifier_common::name_hash`): `chunk_h[m]` after `m` steps.
    pub chunk_h: [u64; MAX_NAME_LEN / 8],
    /// Values passed through memory the verifier does not track, so that a loop's state does
    /// not drift from one turn to the next (see `launder`).
    pub tmp: [u64; 4],
    /// Counters of the name hash pass (names.rs) that only some paths of a step change: kept
    /// in map memory, which the verifier does not track, so those paths end in equal states.
    pub lp: LoopState,
    /// State of the HTTP/1.x and HTTP/2 loops (http.rs), like `lp`.
    pub hl: HttpLoop,
    /// A copy of the start of the payload (HTTP/1.x, HTTP/2), or a reply being built.
    pub window: [u8; WINDOW + 16],
}

/// Counters of the name hash pass.
#[repr(C)]
pub struct LoopState {
    /// Dots seen so far, from the end of the name.
    pub dots: u64,
    /// Entries of `Scratch::cand` in use.
    pub ncand: u64,
}

/// State shared by the `bpf_loop` callbacks of the HTTP/1.x and HTTP/2 scans: a window of
/// `n` bytes, a cursor and what the scan found.
#[repr(C)]
pub struct HttpLoop {
    pub n: u64,
    /// The cursor (a window offset).
    pub pos: u64,
    /// What a scan looks for, or the end of the range it walks.
    pub arg: u64,
    /// Results: a start and an end (or length) in the window.
    pub a: u64,
    pub b: u64,
    /// 1: the scan found what it looked for; 2: the input is not of the expected form.
    pub done: u64,
    /// The `:authority` value is Huffman-coded.
    pub huffman: u64,
    /// Its decode (`http::huffman_turn`): 0 before the first symbol, then 1 for a plain host,
    /// 2 for a bracketed one.
    pub mode: u64,
    /// 1 when the bits decoded so far may end the coded string (a valid padding), else 0.
    pub accept: u64,
    /// The segment's payload length (the HTTP/2 frame walk's end).
    pub seg: u64,
}

/// Per-CPU state of one packet (kept off the 512-byte stack).
#[repr(C)]
pub struct PacketState {
    pub pkt: Pkt,
    /// The generation read at the start of the packet.
    pub generation: u8,
    /// The state of the packet's flow when found PENDING or FOLLOWING, else 0 (set by
    /// `meshclass`).
    pub pending: u8,
    /// The name handed to `meshclass_lookup`: its raw length in `Scratch::name` and the
    /// stage it decides in (SNI or HOST).
    pub name_len: u16,
    pub name_stage: u8,
    pub _pad0: u8,
    /// 1 when `meshclass_split` hands `meshclass_http` the next segment of an HTTP/2 stream
    /// being followed, whose next frame starts `h2_from` bytes into the payload; else 0 (set
    /// by `meshclass`).
    pub h2_cont: u8,
    pub _pad: u8,
    pub h2_from: u32,
    pub cidr: Key<CidrData>,
    /// The port's `PORTS` value (or the empty one), for the tail-called name programs.
    pub port_value: PortValue,
    pub tuple: aya_ebpf::bindings::bpf_sock_tuple,
}

#[map(name = "PKT_STATE")]
pub static PKT_STATE: PerCpuArray<PacketState> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Most bytes of a ClientHello followed across segments (docs/decision.md §6).
pub const HELLO_LIMIT: usize = 16384;

/// Per-CPU working memory of the split-ClientHello parser (split.rs): the flow's parse
/// state while a segment is parsed, and the segment's bytes of the hello.
#[repr(C)]
pub struct SplitWork {
    /// The parse state (copied from and back to the flow's `PENDING` entry).
    pub pv: PendingValue,
    /// Stream position of `buf[0]`.
    pub base: u32,
    /// Stream position just past the last byte in `buf`.
    pub lim: u32,
    /// The segment's bytes from stream position `base` (8 spare bytes for word reads).
    pub buf: [u8; HELLO_LIMIT + 8],
}

#[map(name = "SPLIT")]
pub static SPLIT: PerCpuArray<SplitWork> = PerCpuArray::with_max_entries(1, 0);

/// The name stage programs, at the indices of `classifier_common::jump`.
#[map(name = "JUMP")]
pub static JUMP: ProgramArray = ProgramArray::with_max_entries(jump::COUNT, 0);

/// Returns `v & mask` as a value the verifier knows only by the mask: map memory is not
/// tracked, so loop states that differ only in this value's range become equal and prune.
#[inline(always)]
pub fn launder(s: &mut Scratch, slot: usize, v: usize, mask: usize) -> usize {
    let p = &mut s.tmp[slot & 3] as *mut u64;
    // SAFETY: a valid, aligned pointer into the per-CPU scratch.
    unsafe {
        core::ptr::write_volatile(p, v as u64);
        core::ptr::read_volatile(p) as usize & mask
    }
}

/// Reads a loop-state field after `bpf_loop` ran: the callbacks write it through their own
/// pointer to the scratch, which the compiler cannot see (a `&mut Scratch` is assumed
/// unaliased), so a plain read may be served from a value kept in a register.
#[inline(always)]
pub fn vget<T: Copy>(p: &T) -> T {
    // SAFETY: a valid, aligned reference.
    unsafe { core::ptr::read_volatile(p) }
}

/// Writes a loop-state field before `bpf_loop` runs (see [`vget`]): a plain write may be
/// sunk past the call or dropped.
#[inline(always)]
pub fn vset<T: Copy>(p: &mut T, v: T) {
    // SAFETY: a valid, aligned reference.
    unsafe { core::ptr::write_volatile(p, v) }
}
