//! Map keys, values and codes shared by the meshclass TC program and user space.
//!
//! Every type here is `#[repr(C)]`, built from fixed-width integers and byte arrays, with every
//! padding byte spelled out as a named field, so that the kernel and user space agree on the
//! bytes. Sizes are asserted at compile time. Ports are kept in network byte order (as they
//! appear on the wire) so the kernel never swaps them; addresses are 16 bytes, IPv4 in the first
//! four with the rest zero.
#![no_std]

pub mod hpack;

/// Verdict codes: what happens to a packet.
pub mod verdict {
    /// No verdict (a stage that did not decide).
    pub const NONE: u8 = 0;
    /// The packet continues on its way.
    pub const PASS: u8 = 1;
    /// The packet is dropped silently.
    pub const DROP: u8 = 2;
    /// The client is told at once: TCP RST or ICMP port unreachable.
    pub const REJECT: u8 = 3;
    /// The connection is delivered to the node's transparent proxy.
    pub const REDIRECT: u8 = 4;
    /// Number of verdict codes, for counters.
    pub const COUNT: usize = 5;

    /// The lower-case name of a verdict code.
    pub const fn name(v: u8) -> &'static str {
        match v {
            PASS => "pass",
            DROP => "drop",
            REJECT => "reject",
            REDIRECT => "redirect",
            _ => "none",
        }
    }
}

/// Stage codes: which step of the order of evaluation decided.
pub mod stage {
    /// No stage decided yet.
    pub const NONE: u8 = 0;
    /// A packet of a connection already classified.
    pub const FLOW: u8 = 1;
    /// Exact destination IP and port.
    pub const EXACT: u8 = 2;
    /// Most specific CIDR for the destination port.
    pub const CIDR: u8 = 3;
    /// TLS ClientHello server name.
    pub const SNI: u8 = 4;
    /// HTTP/1.x Host header or HTTP/2 `:authority`.
    pub const HOST: u8 = 5;
    /// A port captured as a whole.
    pub const PORT: u8 = 6;
    /// The outbound policy (nothing in the registry matched).
    pub const POLICY: u8 = 7;
    /// Waiting for the client's first payload (TCP handshake packets of a name-carrying port).
    pub const PENDING: u8 = 8;
    /// Not IP, or a packet the program does not classify (malformed, non-first fragment).
    pub const OTHER: u8 = 9;
    /// Number of stage codes, for counters.
    pub const COUNT: usize = 10;

    /// The lower-case name of a stage code.
    pub const fn name(s: u8) -> &'static str {
        match s {
            FLOW => "flow",
            EXACT => "exact",
            CIDR => "cidr",
            SNI => "sni",
            HOST => "host",
            PORT => "port",
            POLICY => "policy",
            PENDING => "pending",
            OTHER => "other",
            _ => "none",
        }
    }
}

/// Address families as stored in keys.
pub mod family {
    pub const V4: u8 = 4;
    pub const V6: u8 = 6;
}

/// IP protocol numbers as stored in keys.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Outbound policy for destinations that the registry does not know.
pub mod policy {
    /// Istio's default: unknown destinations pass.
    pub const ALLOW_ANY: u8 = 0;
    /// Unknown destinations are blocked.
    pub const REGISTRY_ONLY: u8 = 1;
}

/// Which name protocols a port carries, as bit flags in [`PortValue::name_kinds`].
pub mod name_kind {
    /// TLS ClientHello SNI.
    pub const TLS: u8 = 1;
    /// HTTP/1.x Host header.
    pub const HTTP: u8 = 2;
    /// HTTP/2 with prior knowledge: the `:authority` of the first HEADERS frame.
    pub const H2: u8 = 4;
}

/// Kinds of name entries, in [`NameKey::kind`].
pub mod name_match {
    /// The whole name, lower-cased.
    pub const EXACT: u8 = 0;
    /// A `*.` wildcard, stored as its suffix with the leading dot (`.example.com`).
    pub const SUFFIX: u8 = 1;
}

/// Bits in [`Config::flags`].
pub mod config_flags {
    /// Emit a decision event for every new connection, not only blocked ones.
    pub const EVENTS_ALL: u32 = 1;
    /// Treat a ClientHello with Encrypted Client Hello as inspectable by its outer SNI.
    pub const ECH_OUTER_SNI: u32 = 2;
    /// Bits 24-31: the registry's epoch, the low byte of the count of applies (`Control::
    /// generation`, whose low bit is the generation in force), which UDP flow entries record
    /// (docs/decision.md §3).
    pub const EPOCH_SHIFT: u32 = 24;
}

impl Config {
    /// The registry epoch these settings belong to ([`config_flags::EPOCH_SHIFT`]).
    #[inline(always)]
    pub fn epoch(&self) -> u8 {
        (self.flags >> config_flags::EPOCH_SHIFT) as u8
    }
}

/// Indexes into each CPU's counters (`CpuCounts::counters`, the `COUNTERS` map).
pub mod counter {
    use super::{stage, verdict};

    /// Packets by verdict: `BY_VERDICT + verdict`. Derived in user space from [`DECIDED`]
    /// (the program never writes it).
    pub const BY_VERDICT: u32 = 0;
    /// Packets by deciding stage: `BY_STAGE + stage`. Derived from [`DECIDED`].
    pub const BY_STAGE: u32 = 8;
    /// Every packet the program saw. Derived from [`DECIDED`]: every packet is counted there
    /// exactly once.
    pub const PACKETS: u32 = 24;
    /// ClientHellos that carried Encrypted Client Hello (0xfe0d).
    pub const ECH_SEEN: u32 = 25;
    /// Packets with headers too short or malformed to classify.
    pub const MALFORMED: u32 = 26;
    /// IP fragments after the first one.
    pub const FRAGMENTS: u32 = 27;
    /// New connections decided (first decision of a flow). Derived from [`DECIDED`]: the
    /// decisions of the stages that start a flow ([`starts_flow`]).
    pub const NEW_FLOWS: u32 = 28;
    /// Decision events dropped because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 29;
    /// ClientHellos followed across more than one TCP segment.
    pub const SPLIT_HELLOS: u32 = 30;
    /// Redirects that found no proxy socket (the packet was dropped).
    pub const REDIRECT_NO_SOCKET: u32 = 31;
    /// Name hits on entries whose verdict is REDIRECT, applied as PASS (too late to redirect).
    pub const LATE_REDIRECT: u32 = 32;
    /// HTTP/2 prior-knowledge streams followed across segments whose `:authority` came in a
    /// later segment than the preface (looked up, hit or not).
    pub const SPLIT_H2: u32 = 33;
    /// Packets by verdict and deciding stage, the one counter the program increments for
    /// every packet: `DECIDED + (verdict << 4) + stage`. One increment instead of three.
    pub const DECIDED: u32 = 64;
    /// Size of the array.
    pub const COUNT: u32 = DECIDED + 8 * 16;
    /// The counters below [`DECIDED`]: what user space reports, with the derived ones filled in.
    pub const REPORTED: u32 = 40;

    /// The `DECIDED` stage cell of a packet the outbound policy decides without starting a
    /// flow (neither TCP nor UDP): reported as [`stage::POLICY`], not counted in
    /// [`NEW_FLOWS`].
    pub const POLICY_NO_FLOW: u8 = 15;

    /// Whether a decision in `DECIDED` stage cell `s` started a flow: the stages `decide`
    /// counts (every first decision of a TCP or UDP connection).
    pub const fn starts_flow(s: u8) -> bool {
        matches!(
            s,
            stage::EXACT | stage::CIDR | stage::SNI | stage::HOST | stage::PORT | stage::POLICY
        )
    }

    /// The index of the (verdict, stage) counter.
    #[inline(always)]
    pub const fn decided(verdict: u8, stage: u8) -> u32 {
        DECIDED + ((verdict as u32 & 7) << 4) + (stage as u32 & 15)
    }

    const _: () = assert!(BY_VERDICT as usize + verdict::COUNT <= BY_STAGE as usize);
    const _: () = assert!(BY_STAGE as usize + stage::COUNT <= PACKETS as usize);
    const _: () = assert!(LATE_REDIRECT < REPORTED && REPORTED <= DECIDED);
    const _: () = assert!(verdict::COUNT <= 8 && stage::COUNT <= 16);
}

/// Names of the maps in the object file, as user space looks them up.
pub mod maps {
    /// The generation in force and each generation's settings: one [`crate::Control`].
    pub const CONTROL: &str = "CONTROL";
    pub const EXACT: &str = "EXACT";
    pub const CIDR: &str = "CIDR";
    pub const PORTS: &str = "PORTS";
    /// Name entries (an array of [`crate::NameRecord`]s), written through a shared
    /// mapping; found through `NAME_INDEX`.
    pub const NAMES: &str = "NAMES";
    /// The name index: an array of [`crate::NameBucket`]s, written through a shared mapping.
    pub const NAME_INDEX: &str = "NAME_INDEX";
    /// The flow table: an array of [`crate::FlowBucket`]s.
    pub const FLOWS: &str = "FLOWS";
    /// Each CPU's counters and entry-hit cache: one per-CPU [`crate::CpuCounts`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Hits per entry id, all CPUs: an array of u64 (atomic adds), mapped by user space.
    pub const ENTRY_HITS: &str = "ENTRY_HITS";
    pub const EVENTS: &str = "EVENTS";
    pub const SCRATCH: &str = "SCRATCH";
    pub const PENDING: &str = "PENDING";
    pub const LAYOUT: &str = "LAYOUT";
    /// Program array (indices in [`crate::jump`]): the name stages as tail calls, so that the
    /// verifier checks each once.
    pub const JUMP: &str = "JUMP";
    /// Per-CPU state of the packet in flight, shared by the program and its tail call.
    pub const PKT_STATE: &str = "PKT_STATE";
}

/// Names of the program's read-only globals, set by user space at load
/// (`EbpfLoader::override_global`) to the values it also writes into `LAYOUT`: a frozen
/// read-only map, which the verifier reads as constants, so that each is an immediate in the
/// program's code (a `LAYOUT` lookup cost the key's store and reload, a bounds check and a load
/// on every use).
pub mod globals {
    /// `Layout::flow_mask` (u32).
    pub const FLOW_MASK: &str = "FLOW_MASK";
    /// `Layout::flow_seed` (u64).
    pub const FLOW_SEED: &str = "FLOW_SEED";
    /// `Layout::exact_buckets` (u32).
    pub const EXACT_BUCKETS: &str = "EXACT_BUCKETS";
    /// `Layout::exact_seed` (u64).
    pub const EXACT_SEED: &str = "EXACT_SEED";
    /// `Layout::name_buckets` (u32).
    pub const NAME_BUCKETS: &str = "NAME_BUCKETS";
    /// `Layout::name_seed` (u64).
    pub const NAME_SEED: &str = "NAME_SEED";
}

/// Indices of the `JUMP` program array.
pub mod jump {
    /// `meshclass_names`: TLS SNI, then step 7 (or the HTTP program).
    pub const NAMES: u32 = 0;
    /// `meshclass_http`: HTTP/1.x Host and HTTP/2 `:authority`, then step 7.
    pub const HTTP: u32 = 1;
    /// `meshclass_split`: ClientHellos followed across segments; else on to `NAMES`.
    pub const SPLIT: u32 = 2;
    /// `meshclass_lookup`: looks up the name the stages above extracted, decides, acts.
    pub const LOOKUP: u32 = 3;
    /// Entries of the array.
    pub const COUNT: u32 = 4;
}

/// Default capacities; user space may set others at load time.
pub mod capacity {
    /// Exact (IP, port, protocol) entries per generation.
    pub const EXACT: u32 = 1 << 20;
    /// CIDR entries per generation.
    pub const CIDR: u32 = 1 << 16;
    /// Name entries per generation.
    pub const NAMES: u32 = 1 << 18;
    /// Tracked connections.
    pub const FLOWS: u32 = 1 << 18;
    /// Connections whose first payload is still being parsed.
    pub const PENDING: u32 = 1 << 14;
    /// Entry ids (per-entry hit counters).
    pub const ENTRY_IDS: u32 = 1 << 21;
    /// Decision event ring buffer, in bytes.
    pub const EVENTS_BYTES: u32 = 1 << 20;
}

/// The longest DNS name matched (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_NAME_LEN: usize = 256;

/// Bytes at the start of a segment's payload read for HTTP/1.x and HTTP/2 (docs/decision.md
/// §11), a power of two: an HTTP/1.x Host and an HTTP/2 frame header must lie inside them. A
/// request line of up to about 2 KiB (a signed or redirect URL) still leaves the Host inside
/// (at the node's side of a veth, a request written at once arrives as one GSO packet whatever
/// the MTU). Twice that would not fit a packet of BPF_PROG_TEST_RUN (about 3.7 KiB), so the
/// kernel tests could not hold both sides of the limit to the model.
pub const PAYLOAD_WINDOW: usize = 2048;
const _: () = assert!(PAYLOAD_WINDOW.is_power_of_two());

/// Slots of each CPU's entry-hit cache (`CpuCounts::hits`, docs/decision.md §8), a power of
/// two. A decision by an entry adds one to its id's slot on this CPU when the slot holds that
/// id; else the slot's count goes to `ENTRY_HITS` (one atomic add) and the slot takes the id.
/// An entry's hits are its `ENTRY_HITS` word plus its count in every CPU's slot. 2048, so that
/// a CPU's counters and slots fit the kernel's largest per-CPU value (32 KiB) together.
pub const HIT_CACHE_SLOTS: u32 = 2048;

/// Each CPU's counts: `COUNTERS[0]`, a per-CPU array of one element. The counters and the
/// entry-hit cache share it so that a decision finds both with one lookup of a constant key,
/// which does not wait for the verdict or the entry (a lookup of each was keyed by them), and
/// user space reads all of them with one system call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuCounts {
    /// Indexed by [`counter`].
    pub counters: [u64; counter::COUNT as usize],
    /// The entry-hit cache, indexed by [`hit_slot`]: [`hit_value`]s.
    pub hits: [u64; HIT_CACHE_SLOTS as usize],
}
const _: () = assert!(size_of::<CpuCounts>() <= 32 * 1024);

/// The entry-hit cache slot of entry `id`.
#[inline(always)]
pub const fn hit_slot(id: u32) -> u32 {
    id & (HIT_CACHE_SLOTS - 1)
}

/// An entry-hit cache slot's value for entry `id` with count `n`: `id + 1` in the high half (0:
/// the slot is empty), the count in the low half.
#[inline(always)]
pub const fn hit_value(id: u32, n: u32) -> u64 {
    (id as u64 + 1) << 32 | n as u64
}

/// Whether slot value `v` holds entry `id` and can count one more.
#[inline(always)]
pub const fn hit_holds(v: u64, id: u32) -> bool {
    v >> 32 == id as u64 + 1 && v as u32 != u32::MAX
}

/// The entry id and count slot value `v` holds, if any.
#[inline(always)]
pub const fn hit_parts(v: u64) -> Option<(u32, u32)> {
    if v >> 32 == 0 {
        None
    } else {
        Some(((v >> 32) as u32 - 1, v as u32))
    }
}

/// Layout version of the map set: of every map type in this file and of what the maps hold
/// (12: no HPACK Huffman codings among the names, which the program now decodes). A pinned map
/// set with another version is never adopted by a program built with this one.
pub const LAYOUT_VERSION: u32 = 12;

/// What an entry decides when it matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EntryValue {
    /// The service the entry belongs to (index into the daemon's service table).
    pub service_id: u32,
    /// The entry's own id, for per-entry hit counters (index into `ENTRY_HITS`).
    pub entry_id: u32,
    /// A [`verdict`] code.
    pub verdict: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<EntryValue>() == 12);

/// Key of the exact map: (generation, family, protocol, port, address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExactKey {
    /// Generation the entry belongs to (0 or 1).
    pub generation: u8,
    /// A [`family`] code.
    pub family: u8,
    /// A [`proto`] number.
    pub proto: u8,
    pub _pad: u8,
    /// Destination port, network byte order.
    pub port: u16,
    pub _pad2: u16,
    /// Destination address; IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ExactKey>() == 24);

impl ExactKey {
    /// The key's words in the exact table (without the generation): the address in two
    /// words, then family, protocol and port in the low half of the third (its high half holds
    /// the entry id in a slot).
    #[inline(always)]
    pub fn words(&self) -> [u64; 3] {
        let a = &self.addr;
        [
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
            self.family as u64 | (self.proto as u64) << 8 | (self.port as u64) << 16,
        ]
    }
}

/// Slots per bucket of the exact table.
pub const EXACT_WAYS: usize = 4;

/// One slot of the exact table (`EXACT`): a meta word ([`exact_meta`]) and the key's words
/// ([`ExactKey::words`]), the entry id in the high half of the third.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExactSlot {
    pub meta: u64,
    pub key: [u64; 3],
}
const _: () = assert!(size_of::<ExactSlot>() == 32);

/// A bucket of the exact table: two cache lines. The table is a cuckoo hash: a key lives in
/// one of its two buckets ([`exact_buckets`]); user space writes it (docs/decision.md §4).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExactBucket {
    pub slots: [ExactSlot; EXACT_WAYS],
}
const _: () = assert!(size_of::<ExactBucket>() == 128);

/// The exact table's hash of a key's words in generation `generation` under `seed`
/// (`Layout::exact_seed`): two multiply-xorshift steps for IPv4 (whose second address word is
/// zero), three for IPv6, then the generation's salt. The generation comes last so that the
/// chain of multiplies, which needs only the packet, need not wait for the generation's load.
#[inline(always)]
pub fn exact_hash(w: &[u64; 3], generation: u8, seed: u64) -> u64 {
    let h = flow_mix(flow_mix(seed, w[0]), w[2] & 0xffff_ffff);
    let h = if w[2] as u8 == family::V4 {
        h
    } else {
        flow_mix(h, w[1])
    };
    h ^ (generation as u64 & 1).wrapping_mul(FLOW_HASH_MUL)
}

/// The two buckets of hash `h` in a table of `n` buckets (at least two): the low and the high
/// half of the hash scaled to `0..n` (a multiply and a shift, so `n` need not be a power of
/// two), made distinct.
#[inline(always)]
pub const fn exact_buckets(h: u64, n: u32) -> (u32, u32) {
    let a = (((h & 0xffff_ffff) * n as u64) >> 32) as u32;
    let b = (((h >> 32) * n as u64) >> 32) as u32;
    if a != b {
        (a, b)
    } else if a + 1 < n {
        (a, a + 1)
    } else {
        (a, 0)
    }
}

/// A slot's meta word: byte 0 is 1 when the slot is in use, byte 1 the generation, byte 2 the
/// verdict, the high half the service id. Written last (after the key) and cleared first.
#[inline(always)]
pub const fn exact_meta(generation: u8, verdict: u8, service_id: u32) -> u64 {
    (service_id as u64) << 32 | (verdict as u64) << 16 | (generation as u64) << 8 | 1
}

/// Whether meta word `m` is a slot in use of generation `generation`.
#[inline(always)]
pub const fn exact_meta_is(m: u64, generation: u8) -> bool {
    m & 0xffff == (generation as u64) << 8 | 1
}

/// The entry a slot in use holds (meta word `m`, third key word `w2`). Built from three
/// 32-bit words: a struct literal with its three zero padding bytes became a `memset` call in
/// the program (a call and a return on every exact hit).
#[inline(always)]
pub const fn exact_entry(m: u64, w2: u64) -> EntryValue {
    let w = [(m >> 32) as u32, (w2 >> 32) as u32, (m >> 16) as u32 & 0xff];
    // SAFETY: EntryValue is repr(C) u32, u32, u8, [u8; 3]: 12 bytes, every bit pattern valid;
    // the third word's low byte is the verdict (little-endian, as on bpfel and the hosts it
    // runs on), the padding zero.
    unsafe { core::mem::transmute::<[u32; 3], EntryValue>(w) }
}

/// Slots per bucket of the name index.
pub const NAME_WAYS: usize = 4;

/// One slot of the name index (`NAME_INDEX`): the key's [`name_hash`] and a meta word
/// ([`name_meta`]) that holds the rest of the key and where the name and entry are (`NAMES`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameSlot {
    pub hash: u64,
    pub meta: u64,
}
const _: () = assert!(size_of::<NameSlot>() == 16);

/// A bucket of the name index: one cache line. A cuckoo hash like the exact table: a key lives
/// in one of its two buckets ([`exact_buckets`] of [`name_index_hash`]); docs/decision.md §6.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameBucket {
    pub slots: [NameSlot; NAME_WAYS],
}
const _: () = assert!(size_of::<NameBucket>() == 64);

/// Most value slots of `NAMES` a meta word can address (24 bits).
pub const NAME_VALUES_MAX: u32 = 1 << 24;

/// The key part of a name slot's meta word: byte 0 is 1 (in use), byte 1 the generation, byte
/// 2 the [`name_match`] kind, bytes 3-4 the port (network byte order, as stored).
#[inline(always)]
pub const fn name_meta_key(generation: u8, kind: u8, port: u16) -> u64 {
    (port as u64) << 24 | (kind as u64) << 16 | (generation as u64) << 8 | 1
}

/// A name slot's meta word: [`name_meta_key`] and, in the top 24 bits, the index of the
/// `NAMES` value slot that holds the name and its entry. Written last and cleared first.
#[inline(always)]
pub const fn name_meta(generation: u8, kind: u8, port: u16, value: u32) -> u64 {
    (value as u64) << 40 | name_meta_key(generation, kind, port)
}

/// Mask of the key part of a meta word.
pub const NAME_META_KEY_MASK: u64 = (1 << 40) - 1;

/// The name index's hash of a key: its [`name_hash`] and meta key ([`name_meta_key`]) under
/// `seed` (`Layout::name_seed`, random per load).
#[inline(always)]
pub const fn name_index_hash(hash: u64, meta_key: u64, seed: u64) -> u64 {
    flow_mix(flow_mix(seed, hash), meta_key)
}

/// The fixed part of a CIDR key before the address; matched in full.
pub const CIDR_FIXED_BITS: u32 = 64;

/// Data of the CIDR LPM trie key. The prefix length is `CIDR_FIXED_BITS + cidr length`, so
/// generation, family, protocol and port always match exactly and the address by prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrData {
    pub generation: u8,
    pub family: u8,
    pub proto: u8,
    pub _pad: u8,
    /// Destination port, network byte order.
    pub port: u16,
    pub _pad2: u16,
    /// Network address (host bits zero).
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<CidrData>() == 24);

/// Key of the ports map: (generation, protocol, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub generation: u8,
    pub proto: u8,
    /// Destination port, network byte order.
    pub port: u16,
}
const _: () = assert!(size_of::<PortKey>() == 4);

/// What the registry says about a destination port as a whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortValue {
    /// The whole-port capture, if `has_capture` is 1.
    pub capture: EntryValue,
    /// 1 when every destination on this port belongs to `capture`'s service.
    pub has_capture: u8,
    /// [`name_kind`] bits: which names to look for in the first payload on this port.
    pub name_kinds: u8,
    /// 1 when `CIDR` has entries for this protocol and port (else the program skips it).
    pub has_cidr: u8,
    pub _pad: u8,
    /// Bit `n` set when a `*.` wildcard of `n` labels (after the `*`) is registered on this
    /// port; bounds how many suffixes the kernel looks up.
    pub suffix_labels: u64,
}
const _: () = assert!(size_of::<PortValue>() == 24);

/// One slot of the ports table (`PORTS`): a meta word (bit 0: in use; bits 8-63: a version
/// that every write of the slot bumps) and the value. User space writes it through a shared
/// mapping: the meta word cleared, the value, the meta word; the program accepts a value read
/// between two equal meta words that say in use (docs/decision.md §5).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSlot {
    pub meta: u64,
    pub value: PortValue,
}
const _: () = assert!(size_of::<PortSlot>() == 32);

/// Slots of the ports table: every port of TCP and UDP, in each generation.
pub const PORT_SLOTS: u32 = 4 << 16;

/// The ports table's slot of (generation, protocol, port in network order); `None` for a
/// protocol other than TCP and UDP.
#[inline(always)]
pub const fn port_slot(generation: u8, protocol: u8, port: u16) -> Option<u32> {
    let p = match protocol {
        proto::TCP => 0,
        proto::UDP => 1,
        _ => return None,
    };
    Some(((generation as u32 & 1) << 17) | p << 16 | port as u32)
}

/// Key of a name entry, as the writer keeps it: a slot of the name index ([`NameSlot`]) holds
/// the hash, the rest is in the slot's meta word ([`name_meta_key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    /// [`name_hash`] of the lower-cased name: 8 bytes a step from its end, so that every
    /// suffix's hash follows from a step of the whole name's.
    pub hash: u64,
    pub generation: u8,
    /// A [`name_match`] code.
    pub kind: u8,
    /// Destination port, network byte order.
    pub port: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<NameKey>() == 16);

impl NameKey {
    /// The key's part of a name slot's meta word ([`name_meta_key`]).
    #[inline(always)]
    pub const fn meta_key(&self) -> u64 {
        name_meta_key(self.generation, self.kind, self.port)
    }

    /// The key of hash `hash` whose meta key (or meta word) is `m`.
    #[inline(always)]
    pub const fn from_meta(hash: u64, m: u64) -> Self {
        Self {
            hash,
            generation: (m >> 8) as u8,
            kind: (m >> 16) as u8,
            port: (m >> 24) as u16,
            _pad: 0,
        }
    }
}

/// A name entry: its verdict and the full name, so that a hash collision never matches. An
/// element of `NAMES` (in a [`NameRecord`]: the slots the name index points at).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameValue {
    pub entry: EntryValue,
    /// Length of `name` in bytes.
    pub len: u16,
    pub _pad: [u8; 2],
    /// The lower-cased name (suffix with its leading dot for wildcards), zero-padded.
    pub name: [u8; MAX_NAME_LEN],
}
const _: () = assert!(size_of::<NameValue>() == 16 + MAX_NAME_LEN);

/// An element of `NAMES`: a name entry and the key it belongs to (its hash and meta key,
/// [`name_meta_key`]), the stamp a reader checks before and after it reads the entry. User
/// space clears `key` first and writes it last, so a reader that finds `key` unchanged read
/// one write of this key's record (docs/decision.md §6).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameRecord {
    pub key: u64,
    pub hash: u64,
    pub value: NameValue,
}
const _: () = assert!(size_of::<NameRecord>() == 32 + MAX_NAME_LEN);

impl Default for NameValue {
    fn default() -> Self {
        Self {
            entry: EntryValue::default(),
            len: 0,
            _pad: [0; 2],
            name: [0; MAX_NAME_LEN],
        }
    }
}

/// Start value of the name hash (the FNV-1a 64-bit offset basis).
pub const NAME_HASH_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const NAME_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the name hash: folds in one 8-byte word.
#[inline(always)]
pub const fn name_hash_mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(NAME_HASH_PRIME);
    h ^ (h >> 29)
}

/// The mask of the first `r` bytes (0..=7) of a little-endian word.
#[inline(always)]
pub const fn name_hash_partial_mask(r: usize) -> u64 {
    if r == 0 {
        0
    } else {
        u64::MAX >> (64 - 8 * (r & 7))
    }
}

/// The little-endian word of `b` (at most 8 bytes), zero-extended.
const fn le_word(b: &[u8], from: usize, n: usize) -> u64 {
    let mut w = 0u64;
    let mut k = 0;
    while k < n {
        w |= (b[from + k] as u64) << (8 * k);
        k += 1;
    }
    w
}

/// The name hash of a whole (already lower-cased) name, 8 bytes a step from its end: the
/// words ending at `len`, `len - 8`, ... (each read little-endian), then the first `len % 8`
/// bytes as a zero-extended word, then the length.
///
/// Aligned on the end, the hash of any suffix `name[i..]` shares the first `(len - i) / 8`
/// steps with the whole name's: the kernel hashes a name once, keeps the state after each
/// step, and gets each `*.` suffix's hash from one of them with two more steps.
pub const fn name_hash(name: &[u8]) -> u64 {
    let len = name.len();
    let mut h = NAME_HASH_INIT;
    let mut end = len;
    while end >= 8 {
        h = name_hash_mix(h, le_word(name, end - 8, 8));
        end -= 8;
    }
    name_hash_tail(h, le_word(name, 0, end), len)
}

/// The last steps of the hash of a name (or suffix) of `len` bytes: `h` is the state after its
/// `len / 8` full words, `first` the word read at its start (bytes past `len % 8` are masked).
#[inline(always)]
pub const fn name_hash_tail(h: u64, first: u64, len: usize) -> u64 {
    let r = len % 8;
    let h = if r != 0 {
        name_hash_mix(h, first & name_hash_partial_mask(r))
    } else {
        h
    };
    name_hash_mix(h, len as u64)
}

/// Settings of one generation of the registry: `CONTROL[0].config[generation]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Config {
    /// A [`policy`] code.
    pub outbound_policy: u8,
    /// The verdict for blocked traffic: [`verdict::DROP`] or [`verdict::REJECT`].
    pub blocked_verdict: u8,
    /// The proxy's listening port, network byte order.
    pub proxy_port: u16,
    /// Mark put on redirected packets (the fwmark rule routes them to the local table).
    pub proxy_mark: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// The proxy's IPv4 listening address (network order bytes); 0.0.0.0 for any.
    pub proxy_addr4: [u8; 4],
    /// The proxy's IPv6 listening address; `::` for any.
    pub proxy_addr6: [u8; 16],
    /// The clock ([`Layout::tick_ns`], [`Layout::clock_base`]), copied by user space into
    /// every config it writes: a decision's time then needs nothing beyond the config the
    /// packet already holds (a `LAYOUT` lookup cost the key's store and reload and a bounds
    /// check on every new connection).
    pub tick_ns: u64,
    pub clock_base: u64,
}
const _: () = assert!(size_of::<Config>() == 48);

impl Config {
    /// CLOCK_MONOTONIC, to one tick, at `jiffies`.
    #[inline(always)]
    pub fn clock_ns(&self, jiffies: u64) -> u64 {
        self.clock_base
            .wrapping_add(jiffies.wrapping_mul(self.tick_ns))
    }
}

/// `CONTROL[0]`: the generation in force and the settings of both generations, in one map
/// element, so that a packet finds them with one lookup of a constant key (an `ACTIVE` lookup
/// whose generation then keyed a `CONFIG` lookup cost two, the second waiting on the first).
///
/// User space writes the element whole, three times an apply: the settings of the generation
/// to come, then `generation` (one byte of it changes: the flip), then the settings of the
/// other generation. Each write leaves every byte it does not mean to change as it was, so a
/// reader never sees a torn field, and sees a generation only after its settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Control {
    /// The count of applies, modulo 256: its low bit is the generation in force; it is the
    /// epoch ([`Config::epoch`]).
    pub generation: u32,
    pub _pad: u32,
    /// Each generation's settings.
    pub config: [Config; 2],
    /// Up to a power of two, so that the lookup scales the index by a shift.
    pub _pad2: [u64; 3],
}
const _: () = assert!(size_of::<Control>() == 128);

impl Control {
    /// The generation in force and its settings.
    #[inline(always)]
    pub fn active(&self) -> (&Config, u8) {
        let generation = (self.generation & 1) as u8;
        (self.config_of(generation), generation)
    }

    /// The settings of generation `generation` (its low bit).
    #[inline(always)]
    pub fn config_of(&self, generation: u8) -> &Config {
        &self.config[(generation & 1) as usize]
    }
}

/// Key of the flow table: the connection as the client sent it. Aligned to 8 so that the
/// program zeroes and copies it with 8-byte stores, not a byte-loop `memset` call.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub family: u8,
    pub proto: u8,
    pub _pad: u16,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<FlowKey>() == 40 && align_of::<FlowKey>() == 8);

/// Ways of a flow table bucket: a flow lives in one of the `FLOW_WAYS` slots of the bucket its
/// hash selects (docs/decision.md §3, "The flow table").
pub const FLOW_WAYS: usize = 4;

/// A flow key as the flow table stores, hashes and compares it: five 8-byte words. Word 0 is
/// the `FlowKey`'s first word without its padding bytes; IPv4 packs both addresses into word 1
/// and leaves words 2-4 zero; IPv6 keeps its four address words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowWords(pub [u64; 5]);
const _: () = assert!(size_of::<FlowWords>() == 40);

impl FlowKey {
    /// The table form of this key (little-endian words, as on `bpfel` and the hosts it runs
    /// on). Built from words, so that the program spends a few instructions on it.
    #[inline(always)]
    pub fn words(&self) -> FlowWords {
        let w = self as *const FlowKey as *const u64;
        // SAFETY: FlowKey is 40 bytes and 8-aligned: words 0-4 are inside it.
        let (w0, s0, s1, d0, d1) = unsafe { (*w, *w.add(1), *w.add(2), *w.add(3), *w.add(4)) };
        // Word 0 without the padding bytes (2 and 3), so that equal flows hash equal.
        let w0 = w0 & 0xffff_ffff_0000_ffff;
        if self.family == family::V4 {
            FlowWords([w0, (s0 & 0xffff_ffff) | d0 << 32, 0, 0, 0])
        } else {
            FlowWords([w0, s0, s1, d0, d1])
        }
    }
}

impl FlowKey {
    /// The exact table's words ([`ExactKey::words`]) for this flow's destination, built from
    /// the key's words.
    #[inline(always)]
    pub fn exact_words(&self) -> [u64; 3] {
        let w = self as *const FlowKey as *const u64;
        // SAFETY: as in `words`.
        let (w0, d0, d1) = unsafe { (*w, *w.add(3), *w.add(4)) };
        exact_words_of(w0, d0, d1)
    }
}

/// The exact table's words from a flow key's word 0 and its destination's two words.
#[inline(always)]
const fn exact_words_of(w0: u64, d0: u64, d1: u64) -> [u64; 3] {
    [d0, d1, (w0 & 0xffff) | (w0 >> 48) << 16]
}

impl FlowWords {
    /// The exact table's words for the flow's destination ([`FlowKey::exact_words`]).
    #[inline(always)]
    pub fn exact_words(&self) -> [u64; 3] {
        let k = self.key_words();
        exact_words_of(k[0], k[3], k[4])
    }

    /// Whether the key is of an IPv4 flow (only words 0 and 1 in use).
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.0[0] as u8 == family::V4
    }

    /// The words of the [`FlowKey`] it stands for (little-endian, as [`FlowKey::words`] reads
    /// them): word 0 as it is, an IPv4 address pair unpacked into the first 4 bytes of each
    /// address.
    #[inline(always)]
    pub fn key_words(&self) -> [u64; 5] {
        let w = &self.0;
        if self.is_v4() {
            [w[0], w[1] & 0xffff_ffff, 0, w[1] >> 32, 0]
        } else {
            *w
        }
    }

    /// The flow key it stands for.
    pub fn key(&self) -> FlowKey {
        let w = self.key_words();
        let mut k = FlowKey {
            family: w[0] as u8,
            proto: (w[0] >> 8) as u8,
            _pad: 0,
            sport: (w[0] >> 32) as u16,
            dport: (w[0] >> 48) as u16,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        k.saddr[..8].copy_from_slice(&w[1].to_le_bytes());
        k.saddr[8..].copy_from_slice(&w[2].to_le_bytes());
        k.daddr[..8].copy_from_slice(&w[3].to_le_bytes());
        k.daddr[8..].copy_from_slice(&w[4].to_le_bytes());
        k
    }
}

const FLOW_HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
const fn flow_mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(FLOW_HASH_MUL);
    h ^ (h >> 32)
}

/// The flow table's hash of a key under the table's seed (`Layout::flow_seed`, random per
/// load): the low 32 bits pick the bucket (`& Layout::flow_mask`), the high 32 bits are the
/// slot's tag ([`flow_meta`]). IPv4 keys take two steps, IPv6 keys five.
#[inline(always)]
pub fn flow_hash(k: &FlowWords, seed: u64) -> u64 {
    let w = &k.0;
    let h = flow_mix(flow_mix(seed, w[0]), w[1]);
    if k.is_v4() {
        h
    } else {
        flow_mix(flow_mix(flow_mix(h, w[2]), w[3]), w[4])
    }
}

/// The bucket of hash `h` in a table of `mask + 1` buckets.
#[inline(always)]
pub const fn flow_bucket(h: u64, mask: u32) -> u32 {
    h as u32 & mask
}

/// A slot's meta word: what the established path needs, written and read as one 8-byte word
/// so that a verdict is never seen apart from the tag of the key it belongs to. Byte 0 state
/// (0: empty), 1 verdict, 2 stage, 3 the registry epoch ([`Config::epoch`]; the generation for
/// a PENDING entry), 4-7 the tag (high half of [`flow_hash`]).
#[inline(always)]
pub const fn flow_meta(h: u64, state: u8, verdict: u8, stage: u8, generation: u8) -> u64 {
    (h & 0xffff_ffff_0000_0000)
        | (generation as u64) << 24
        | (stage as u64) << 16
        | (verdict as u64) << 8
        | state as u64
}

/// Whether meta word `m` is in use and carries the tag of hash `h`.
#[inline(always)]
pub const fn flow_meta_is(m: u64, h: u64) -> bool {
    m as u8 != 0 && (m ^ h) >> 32 == 0
}

/// One slot of the flow table: 64 bytes, one cache line.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowSlot {
    /// See [`flow_meta`].
    pub meta: u64,
    pub key: FlowWords,
    pub service_id: u32,
    pub entry_id: u32,
    /// Time of the decision (CLOCK_MONOTONIC to one tick: [`Config::clock_ns`]), 0 while
    /// PENDING.
    pub decided_ns: u64,
}
const _: () = assert!(size_of::<FlowSlot>() == 64);

impl FlowSlot {
    /// The entry this slot holds, if any.
    pub fn entry(&self) -> Option<(FlowKey, FlowValue)> {
        let m = self.meta;
        if m as u8 == 0 {
            return None;
        }
        Some((
            self.key.key(),
            FlowValue {
                state: m as u8,
                verdict: (m >> 8) as u8,
                stage: (m >> 16) as u8,
                generation: (m >> 24) as u8,
                service_id: self.service_id,
                entry_id: self.entry_id,
                _pad: 0,
                decided_ns: self.decided_ns,
            },
        ))
    }
}

/// One element of `FLOWS`: a bucket of [`FLOW_WAYS`] slots and their replacement state.
/// `refs[w]` is set when slot `w` is stored or found and cleared as the clock hand passes it;
/// `hand` is where the next eviction looks first (docs/decision.md §3).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowBucket {
    pub slots: [FlowSlot; FLOW_WAYS],
    pub refs: [u8; FLOW_WAYS],
    pub hand: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowBucket>() == 64 * FLOW_WAYS + 8);

/// Flow states, in [`FlowValue::state`].
pub mod flow_state {
    /// The verdict is final; every packet gets it.
    pub const DECIDED: u8 = 1;
    /// Waiting for the client's first payload.
    pub const PENDING: u8 = 2;
    /// In the middle of a ClientHello that spans segments: the `PENDING` map holds its parse
    /// state. Only a flow in this state looks that map up, so an entry left there by an earlier
    /// connection with the same key is never taken for this one's (and a SYN need not delete
    /// it).
    pub const FOLLOWING: u8 = 3;
}

/// A tracked connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowValue {
    /// A [`flow_state`] code.
    pub state: u8,
    /// The [`verdict`] given to the connection.
    pub verdict: u8,
    /// The [`stage`] that decided it.
    pub stage: u8,
    /// The registry epoch the decision was made in ([`Config::epoch`]; for a PENDING entry, the
    /// generation).
    pub generation: u8,
    pub service_id: u32,
    pub entry_id: u32,
    pub _pad: u32,
    /// Time of the decision (CLOCK_MONOTONIC to one tick: [`Config::clock_ns`]).
    pub decided_ns: u64,
}
const _: () = assert!(size_of::<FlowValue>() == 24);

/// Parse state of a connection whose ClientHello spans several TCP segments (`PENDING`): a
/// streaming, field-level parser that keeps its position, the field being read and the server
/// name collected so far (docs/decision.md §11, "Split ClientHello"). Stream positions count
/// from the first byte of the hello (the record header); a hello followed is at most 16384
/// bytes, so positions fit in a u16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingValue {
    /// TCP sequence number of the next byte expected from the client.
    pub next_seq: u32,
    /// The field being read, big-endian, as far as it has arrived.
    pub acc: u32,
    /// Stream bytes parsed so far.
    pub pos: u16,
    /// End of the hello (`9 + handshake length`), 0 until byte 9 has arrived.
    pub end: u16,
    /// Where the current skip ends.
    pub skip_to: u16,
    /// End of the extensions block (before that is known: the record length).
    pub ext_end: u16,
    /// End of the extension being read.
    pub ext_off: u16,
    /// Parser state code (the program's own).
    pub phase: u8,
    /// Bytes of the current field still to read.
    pub need: u8,
    /// Extensions read so far.
    pub count: u8,
    /// Program's own flags (ECH seen, not a ClientHello).
    pub flags: u8,
    /// Length of the server name found (0: none yet).
    pub name_len: u8,
    /// Bytes of it collected so far.
    pub name_got: u8,
    /// Name bytes collected so far (as sent).
    pub name: [u8; MAX_NAME_LEN],
}
const _: () = assert!(size_of::<PendingValue>() == 24 + MAX_NAME_LEN);

impl Default for PendingValue {
    fn default() -> Self {
        Self {
            next_seq: 0,
            acc: 0,
            pos: 0,
            end: 0,
            skip_to: 0,
            ext_end: 0,
            ext_off: 0,
            phase: 0,
            need: 0,
            count: 0,
            flags: 0,
            name_len: 0,
            name_got: 0,
            name: [0; MAX_NAME_LEN],
        }
    }
}

/// A decision event, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Time of the decision (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC to one scheduler
    /// tick, 1-4 ms).
    pub ts_ns: u64,
    pub flow: FlowKey,
    pub service_id: u32,
    pub entry_id: u32,
    pub verdict: u8,
    pub stage: u8,
    pub name_len: u16,
    pub _pad: u32,
    /// The name that decided (`name_len` bytes; the bytes after them are unspecified).
    pub name: [u8; MAX_NAME_LEN],
}
const _: () = assert!(size_of::<Event>() == 8 + 40 + 16 + MAX_NAME_LEN);

/// The layout stamp: `LAYOUT[0]`, written at load, checked before pinned maps are adopted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Layout {
    pub version: u32,
    /// Buckets of `FLOWS` minus one (a power of two minus one).
    pub flow_mask: u32,
    /// Seed of [`flow_hash`], random per load, so that no one outside can aim flows at one
    /// bucket.
    pub flow_seed: u64,
    /// The kernel's tick (`TICK_NSEC`) and CLOCK_MONOTONIC at jiffy 0, measured at load: the
    /// program times decisions as [`Config::clock_ns`] of `bpf_jiffies64`, which the verifier
    /// inlines as one load (a helper call and its return cost ~15 ns of every new connection).
    pub tick_ns: u64,
    pub clock_base: u64,
    /// Buckets of `EXACT` (at least two), and the seed of [`exact_hash`] (random per load).
    pub exact_buckets: u32,
    /// Buckets of `NAME_INDEX` (at least two), and the seed of [`name_index_hash`].
    pub name_buckets: u32,
    pub exact_seed: u64,
    pub name_seed: u64,
}
const _: () = assert!(size_of::<Layout>() == 56);

/// Service id meaning "no service" (the outbound policy decided).
pub const NO_SERVICE: u32 = u32::MAX;

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($t:ty),*) => { $(
            // SAFETY: repr(C), fixed-width integer and byte-array fields, no implicit padding
            // (sizes asserted above), every bit pattern valid.
            unsafe impl aya::Pod for $t {}
        )* };
    }
    pod!(
        FlowBucket,
        ExactBucket,
        PortSlot,
        EntryValue,
        ExactKey,
        CidrData,
        PortKey,
        PortValue,
        NameKey,
        NameValue,
        Config,
        Control,
        CpuCounts,
        FlowKey,
        FlowValue,
        PendingValue,
        Event,
        Layout
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flows_exact_words_are_those_of_its_destinations_exact_key() {
        for (family, addr) in [
            (
                family::V4,
                [10, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                family::V6,
                [0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 1],
            ),
        ] {
            let k = FlowKey {
                family,
                proto: proto::UDP,
                _pad: 0x5a5a,
                sport: 0x1234,
                dport: 0xbb01,
                saddr: [7; 16],
                daddr: addr,
            };
            let e = ExactKey {
                generation: 1,
                family,
                proto: proto::UDP,
                _pad: 0,
                port: 0xbb01,
                _pad2: 0,
                addr,
            };
            assert_eq!(k.exact_words(), e.words());
        }
        // A slot's entry comes back field by field.
        let m = exact_meta(1, verdict::REDIRECT, 0xdead_beef);
        assert!(exact_meta_is(m, 1) && !exact_meta_is(m, 0));
        let e = exact_entry(m, 0x1234_5678_bb01_0604);
        assert_eq!(
            (e.service_id, e.entry_id, e.verdict, e._pad),
            (0xdead_beef, 0x1234_5678, verdict::REDIRECT, [0; 3])
        );
        // Buckets are distinct and in range, for any table of two or more.
        for n in [2u32, 3, 7, 1000, 699_051] {
            for h in [0u64, u64::MAX, 0x8000_0000_8000_0000, 0x1234_5678_9abc_def0] {
                let (a, b) = exact_buckets(h, n);
                assert!(a < n && b < n && a != b, "{h:#x} in {n}: {a}, {b}");
            }
        }
    }

    #[test]
    fn flow_words_keep_every_field_of_either_family() {
        let mut k = FlowKey {
            family: family::V4,
            proto: proto::TCP,
            _pad: 0x5a5a,
            sport: 0x1234,
            dport: 0xbb01,
            saddr: [10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let w = k.words();
        assert!(w.is_v4());
        assert_eq!(w.0[2..], [0, 0, 0]);
        assert_eq!(w.key(), FlowKey { _pad: 0, ..k });
        k.family = family::V6;
        k.saddr = core::array::from_fn(|i| i as u8 + 1);
        k.daddr = core::array::from_fn(|i| 0xf0 - i as u8);
        let w6 = k.words();
        assert!(!w6.is_v4());
        assert_eq!(w6.key(), FlowKey { _pad: 0, ..k });
        // The padding does not reach the hash; every other field does.
        let seed = 0x0123_4567_89ab_cdef;
        let h = flow_hash(&w6, seed);
        assert_eq!(flow_hash(&FlowKey { _pad: 0, ..k }.words(), seed), h);
        let mut other = k;
        other.daddr[15] ^= 1;
        assert_ne!(flow_hash(&other.words(), seed), h);
        assert_ne!(flow_hash(&w6, seed ^ 1), h);
    }

    #[test]
    fn a_slot_gives_back_the_entry_its_meta_word_describes() {
        let k = FlowKey {
            family: family::V6,
            proto: proto::UDP,
            _pad: 0,
            sport: 7,
            dport: 53,
            saddr: [1; 16],
            daddr: [2; 16],
        };
        let h = flow_hash(&k.words(), 9);
        let m = flow_meta(h, flow_state::DECIDED, verdict::REDIRECT, stage::CIDR, 1);
        assert!(flow_meta_is(m, h));
        assert!(!flow_meta_is(m, h ^ 1 << 40));
        assert!(!flow_meta_is(0, h & !0xff));
        let slot = FlowSlot {
            meta: m,
            key: k.words(),
            service_id: 3,
            entry_id: 4,
            decided_ns: 5,
        };
        let (key, v) = slot.entry().unwrap();
        assert_eq!(key, k);
        assert_eq!(
            (
                v.state,
                v.verdict,
                v.stage,
                v.generation,
                v.service_id,
                v.entry_id
            ),
            (flow_state::DECIDED, verdict::REDIRECT, stage::CIDR, 1, 3, 4)
        );
        assert_eq!(FlowSlot::default().entry(), None);
    }

    #[test]
    fn a_suffix_hash_comes_from_a_step_of_the_whole_name() {
        // The kernel's way: the states after each full word from the end, then the tail.
        let name = b"a-rather-long-label.api.example.com";
        let mut states = [NAME_HASH_INIT; 40];
        let mut h = NAME_HASH_INIT;
        let mut end = name.len();
        let mut k = 0;
        while end >= 8 {
            h = name_hash_mix(h, le_word(name, end - 8, 8));
            end -= 8;
            k += 1;
            states[k] = h;
        }
        for i in 0..name.len() {
            let l = name.len() - i;
            // Read 8 bytes at the suffix's start (past the end: zeros, as in the scratch).
            let mut w = [0u8; 8];
            for (d, b) in w.iter_mut().zip(&name[i..]) {
                *d = *b;
            }
            let first = u64::from_le_bytes(w);
            assert_eq!(
                name_hash_tail(states[l / 8], first, l),
                name_hash(&name[i..]),
                "suffix at {i}"
            );
        }
        assert_ne!(name_hash(b"a.com"), name_hash(b"b.com"));
        assert_ne!(name_hash(b"abcdefgh"), name_hash(b"abcdefgh\0"));
    }

    #[test]
    fn a_hit_slot_holds_its_id_until_its_count_is_full() {
        let (id, other) = (5u32, 5 + HIT_CACHE_SLOTS);
        assert_eq!(hit_slot(id), hit_slot(other));
        assert!(!hit_holds(0, id), "an empty slot holds nothing");
        assert_eq!(hit_parts(0), None);
        let v = hit_value(id, 1);
        assert!(hit_holds(v, id) && !hit_holds(v, other));
        assert_eq!(hit_parts(v + 41), Some((id, 42)));
        // Entry 0 is a real id: its slot value is not the empty one.
        assert_eq!(hit_parts(hit_value(0, 1)), Some((0, 1)));
        // A full count goes to ENTRY_HITS rather than wrap.
        assert!(!hit_holds(hit_value(id, u32::MAX), id));
        assert_eq!(hit_parts(hit_value(id, u32::MAX)), Some((id, u32::MAX)));
    }
}
