//! The order of evaluation (docs/decision.md §1-§8).

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use classifier_common::{
    config_flags, counter, family, flow_state, jump, name_kind, policy, proto, stage, verdict,
    CidrData, Config, EntryValue, Event, FlowWords, PendingValue, PortValue, CIDR_FIXED_BITS,
    MAX_NAME_LEN, NO_SERVICE,
};

use super::http::H2;
use super::{
    act::{act, code, needs_packet},
    clock, cnt, exact, flows, http,
    maps::{PacketState, CIDR, CONTROL, EVENTS, JUMP, PENDING, PKT_STATE, SCRATCH, SPLIT},
    names,
    pkt::{self, Parsed, Pkt, TCP_ACK, TCP_SYN},
    ports, split,
    tls::{self, Hello},
};

/// Classifies one packet and acts on the verdict.
#[inline(always)]
pub fn try_classify(ctx: &TcContext) -> Result<i32, i32> {
    // §2-§3 Headers and flow lookup. The common headers (`pkt::simple_v4`, `simple_v6`) are
    // parsed into registers and looked up from there, one copy of the lookup per family with
    // the key's shape known: an established flow that passes or drops is decided without
    // writing the packet to `PKT_STATE` or reading the generation and the configuration. A
    // packet that goes on is written there in its own branch, so that nothing of one family's
    // parse is carried (spilled) into the other's. `flow`: the meta word of the packet's flow
    // entry, 0 for none (a word, not an `Option`, whose payload LLVM may leave undefined where
    // the verifier reads it). `pre`: for a simple SYN, whose exact stage `simple_flow` has
    // already passed (missed), the configuration and generation it read; else null.
    let (st, parsed, flow, pre) = {
        let s = pkt::simple_v4(ctx);
        if s.ok() {
            let w = &s.words.0;
            let (st, m, pre) = simple_flow(ctx, &s, &FlowWords([w[0], w[1], 0, 0, 0]))?;
            (st, Parsed::Ip, m, pre)
        } else {
            let s = pkt::simple_v6(ctx);
            if s.ok() {
                let (st, m, pre) = simple_flow(ctx, &s, &s.words)?;
                (st, Parsed::Ip, m, pre)
            } else {
                let st = packet_state()?;
                let parsed = pkt::parse_general(ctx, &mut st.pkt);
                let p = &st.pkt;
                let tcp = p.key.proto == proto::TCP;
                let syn_only = tcp && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                let m = if matches!(parsed, Parsed::Ip)
                    && (tcp || p.key.proto == proto::UDP)
                    && !syn_only
                {
                    fresh(
                        flows::get(&p.key, pkt::closing(p.tcp_flags)).unwrap_or(0),
                        tcp,
                    )
                } else {
                    0
                };
                (st, parsed, m, NO_PRE)
            }
        }
    };
    let p = &st.pkt;
    let tcp = p.key.proto == proto::TCP;

    // The state of a flow found PENDING or FOLLOWING (0: none).
    let mut waiting = 0u8;
    if flow != 0 {
        let (state, v) = (flow as u8, (flow >> 8) as u8);
        if state == flow_state::DECIDED {
            cnt::decided(v, stage::FLOW);
            return match v {
                verdict::PASS => Ok(TC_ACT_UNSPEC),
                verdict::DROP => Err(TC_ACT_SHOT),
                _ => match config() {
                    Some((cfg, _)) => Ok(act(ctx, p, cfg, v, false)),
                    None => Err(TC_ACT_SHOT),
                },
            };
        }
        waiting = state;
    }
    let pending = waiting != 0;

    let (cfg, generation) = if pre.0.is_null() {
        config_or_pass()?
    } else {
        // SAFETY: a `CONTROL` value pointer, valid for this program run.
        (unsafe { &*pre.0 }, pre.1)
    };
    match parsed {
        Parsed::Ip => {}
        Parsed::NotIp | Parsed::NeighbourDiscovery => return Ok(only(verdict::PASS, stage::OTHER)),
        Parsed::Fragment => {
            cnt::inc(counter::FRAGMENTS);
            return Ok(only(verdict::PASS, stage::OTHER));
        }
        Parsed::Malformed => {
            cnt::inc(counter::MALFORMED);
            if cfg.outbound_policy == policy::REGISTRY_ONLY {
                cnt::decided(verdict::DROP, stage::OTHER);
                return Err(TC_ACT_SHOT);
            }
            return Ok(only(verdict::PASS, stage::OTHER));
        }
    }
    if !tcp && p.key.proto != proto::UDP {
        let v = blocked(cfg, true);
        // Counted apart from the policy decisions that start flows (user space reports both
        // as POLICY and derives NEW_FLOWS from the others).
        cnt::decided(v, counter::POLICY_NO_FLOW);
        return Ok(act(ctx, p, cfg, v, false));
    }

    // §4 Address stages (the exact one already passed for a simple SYN).
    if !pending && pre.0.is_null() {
        if let Some(e) = exact::lookup(&p.key.exact_words(), generation) {
            return Ok(decide(
                ctx,
                p,
                cfg,
                &Decision::entry(e, stage::EXACT, false, 0),
            ));
        }
    }
    // The port's value goes into `PKT_STATE`, where the tail-called name programs read it
    // (§5); read before the CIDR stage, which it says whether to look at: a port without CIDR
    // entries skips the trie.
    ports::get(generation, p.key.proto, p.key.dport, &mut st.port_value);
    if !pending && st.port_value.has_cidr != 0 {
        let bits = if p.key.family == family::V4 { 32 } else { 128 };
        st.cidr = Key::new(
            CIDR_FIXED_BITS + bits,
            CidrData {
                generation,
                family: p.key.family,
                proto: p.key.proto,
                _pad: 0,
                port: p.key.dport,
                _pad2: 0,
                addr: p.key.daddr,
            },
        );
        if let Some(e) = CIDR.get(&st.cidr) {
            let e = *e;
            return Ok(decide(
                ctx,
                p,
                cfg,
                &Decision::entry(e, stage::CIDR, false, 0),
            ));
        }
    }

    // §5 Is there a name to wait for?
    let port = &st.port_value;
    let kinds = if tcp { port.name_kinds } else { 0 };
    // A port captured with REDIRECT decides at the connection's first packet, before its
    // names: once the first payload has gone to the server, the connection cannot be moved.
    if kinds != 0 && !pending && port.has_capture == 1 && port.capture.verdict == verdict::REDIRECT
    {
        return Ok(port_or_policy(ctx, p, cfg, port, false));
    }
    if (kinds != 0 || pending) && p.payload_len == 0 {
        if !pending {
            // A `PENDING` map entry of an earlier connection with this key stays unread: only
            // FOLLOWING flows look it up.
            let head = flows::head(
                flow_state::PENDING,
                verdict::NONE,
                stage::PENDING,
                generation,
                NO_SERVICE,
            );
            flows::insert(&p.key, head, 0, 0, false);
        }
        return Ok(only(verdict::PASS, stage::PENDING));
    }

    // §6 Name stages, in their own program (verified once, whatever the path here). A
    // PENDING flow goes there too: a ClientHello being followed is followed to its end
    // whatever the port's kinds have become.
    if kinds != 0 || pending {
        st.generation = generation;
        st.pending = waiting;
        st.h2_cont = 0;
        // The split-hello program only for a flow already waiting or a first payload that
        // starts a ClientHello continuing past it (or too long to follow): a whole hello goes
        // straight to the name stages (one tail call fewer; `starts` reads six header bytes).
        let split =
            pending || (kinds & name_kind::TLS != 0 && split::starts(ctx, p) != split::OTHER);
        // SAFETY: tail calls with the program's own context; they return only on failure.
        unsafe {
            if split {
                JUMP.tail_call(ctx, jump::SPLIT);
            }
            JUMP.tail_call(ctx, jump::NAMES);
        }
    }

    // §7 Port capture and policy.
    Ok(port_or_policy(ctx, p, cfg, port, kinds != 0))
}

/// What `simple_flow` passes on besides the packet: for a SYN whose exact stage it passed,
/// the configuration and generation it read for that; else a null pointer.
type Pre = (*const Config, u8);
const NO_PRE: Pre = (core::ptr::null(), 0);

/// The flow lookup of simple packet `s`, whose flow key is `w`, and what follows it: the TC
/// code to return when the flow's verdict settles the packet (`settled`); else `PKT_STATE`,
/// holding the packet now, the flow's meta word (0: none) and what `Pre` says. A SYN never
/// belongs to an established flow: its first stage is the exact one, run here from the
/// registers (`syn_exact`), so that a connection decided there, as most to registered
/// services are, writes the packet to `PKT_STATE` only if acting on it needs it. Inlined once
/// per family.
#[inline(always)]
fn simple_flow(
    ctx: &TcContext,
    s: &pkt::Simple,
    w: &FlowWords,
) -> Result<(&'static mut PacketState, u64, Pre), i32> {
    if s.syn_only() {
        return simple_syn(ctx, s, w);
    }
    let m = fresh(flows::get_words(w, s.closing()).unwrap_or(0), s.tcp());
    if let Some(v) = settled(m) {
        return Err(v);
    }
    Ok((stored(ctx, s)?, m, NO_PRE))
}

/// `simple_flow` for a SYN: the exact stage from the registers, and the packet written to
/// `PKT_STATE` on a miss.
#[inline(always)]
fn simple_syn(
    ctx: &TcContext,
    s: &pkt::Simple,
    w: &FlowWords,
) -> Result<(&'static mut PacketState, u64, Pre), i32> {
    let (cfg, generation) = config_or_pass()?;
    if let Some(e) = exact::lookup(&w.exact_words(), generation) {
        return Err(syn_exact(ctx, s, w, cfg, e));
    }
    Ok((stored(ctx, s)?, 0, (cfg as *const Config, generation)))
}

/// A simple SYN decided by exact entry `e` (§4): recorded from its flow key's words; the
/// packet is written to `PKT_STATE` only for the verdicts whose action needs it.
#[inline(always)]
fn syn_exact(ctx: &TcContext, s: &pkt::Simple, w: &FlowWords, cfg: &Config, e: EntryValue) -> i32 {
    let v = record(w, cfg, &Decision::entry(e, stage::EXACT, false, 0));
    if !needs_packet(v) {
        return code(v);
    }
    match stored(ctx, s) {
        Ok(st) => act(ctx, &st.pkt, cfg, v, false),
        Err(c) => c,
    }
}

/// This CPU's `PKT_STATE` with simple packet `s` written to it (`packet_state`'s error else).
#[inline(always)]
fn stored(ctx: &TcContext, s: &pkt::Simple) -> Result<&'static mut PacketState, i32> {
    let st = packet_state()?;
    s.store(ctx, &mut st.pkt);
    Ok(st)
}

/// The flow's meta word `m`, or 0 (no entry) for a UDP flow (`tcp` false) that a registry
/// applied since decided: a UDP flow has no first packet after which its verdict is settled,
/// so a reload decides it anew (docs/decision.md §3). TCP connections and the inbound
/// program's reply entries (stage FLOW) keep theirs.
#[inline(always)]
fn fresh(m: u64, tcp: bool) -> u64 {
    if tcp || m as u8 != flow_state::DECIDED || (m >> 16) as u8 == stage::FLOW {
        return m;
    }
    match config() {
        Some((cfg, _)) if cfg.epoch() != (m >> 24) as u8 => 0,
        _ => m,
    }
}

/// The TC code for a flow entry (meta word `m`) DECIDED to pass or drop, counted: the packet's
/// whole classification. Other verdicts need the packet in `PKT_STATE` (`act`).
#[inline(always)]
fn settled(m: u64) -> Option<i32> {
    if m as u8 != flow_state::DECIDED {
        return None;
    }
    match (m >> 8) as u8 {
        verdict::PASS => {
            cnt::decided(verdict::PASS, stage::FLOW);
            Some(TC_ACT_UNSPEC)
        }
        verdict::DROP => {
            cnt::decided(verdict::DROP, stage::FLOW);
            Some(TC_ACT_SHOT)
        }
        _ => None,
    }
}

/// This CPU's `PKT_STATE`; else the packet's verdict (PASS, stage OTHER: never reached).
#[inline(always)]
fn packet_state() -> Result<&'static mut PacketState, i32> {
    match PKT_STATE.get_ptr_mut(0) {
        // SAFETY: per-CPU state, used by this program run and its tail calls only.
        Some(st) => Ok(unsafe { &mut *st }),
        None => Err(only(verdict::PASS, stage::OTHER)),
    }
}

/// The active generation (`CONTROL[0]`, read once per packet) and its configuration.
#[inline(always)]
pub(super) fn config() -> Option<(&'static Config, u8)> {
    Some(CONTROL.get(0)?.active())
}

/// `config`, else the packet's verdict without one (PASS, stage OTHER: never reached).
#[inline(always)]
fn config_or_pass() -> Result<(&'static Config, u8), i32> {
    config().ok_or_else(|| only(verdict::PASS, stage::OTHER))
}

/// What the tail-called name programs read: the packet, its generation, config and port.
#[inline(always)]
fn stage_inputs() -> Option<(
    &'static PacketState,
    &'static Config,
    &'static PortValue,
    u8,
)> {
    let st = PKT_STATE.get_ptr(0)?;
    // SAFETY: per-CPU state written by `meshclass` for this packet (a tail call stays on the
    // CPU and runs before any other packet there).
    let st = unsafe { &*st };
    let generation = st.generation & 1;
    let cfg = CONTROL.get(0)?.config_of(generation);
    Some((st, cfg, &st.port_value, generation))
}

/// §6 (TLS) for the first payload of a connection on a name-carrying port: the
/// `meshclass_names` program, tail-called by `meshclass` with the packet in `PKT_STATE`.
/// A payload that gives no TLS name goes on to the HTTP program when the port has Host names
/// (a ClientHello never reads as HTTP there), else to §7.
#[inline(always)]
pub fn try_names(ctx: &TcContext) -> Result<i32, i32> {
    let Some((st, cfg, port, _)) = stage_inputs() else {
        return Ok(only(verdict::PASS, stage::OTHER));
    };
    let p = &st.pkt;
    if port.name_kinds & name_kind::TLS != 0 && extract_tls(ctx, p, cfg) {
        to_lookup(ctx);
        return Ok(port_or_policy(ctx, p, cfg, port, true));
    }
    if port.name_kinds & (name_kind::HTTP | name_kind::H2) != 0 {
        // SAFETY: a tail call with the program's own context; it returns only on failure.
        unsafe { JUMP.tail_call(ctx, jump::HTTP) };
    }
    Ok(port_or_policy(ctx, p, cfg, port, true))
}

/// §6 (HTTP/1.x Host, HTTP/2 `:authority`) then §7: the `meshclass_http` program,
/// tail-called by `meshclass_names` for a first payload, and by `meshclass_split` for the
/// next segment of an HTTP/2 stream being followed (`PacketState::h2_cont`). A stream whose
/// segment ends before its first HEADERS frame is followed into the next (§11).
#[inline(always)]
pub fn try_http(ctx: &TcContext) -> Result<i32, i32> {
    let Some((st, cfg, port, generation)) = stage_inputs() else {
        return Ok(only(verdict::PASS, stage::OTHER));
    };
    let p = &st.pkt;
    let cont = st.h2_cont != 0;
    let seen = if !cont {
        extract_http(ctx, p, port.name_kinds, None)
    } else if st.h2_from >= p.payload_len {
        // The segment lies inside a frame before the HEADERS frame.
        H2::More(st.h2_from - p.payload_len)
    } else {
        extract_http(ctx, p, port.name_kinds, Some(st.h2_from as usize))
    };
    match seen {
        H2::Name(n) => {
            if cont {
                cnt::inc(counter::SPLIT_H2);
                let _ = PENDING.remove(&p.key);
            }
            if describe_name(n, stage::HOST) {
                to_lookup(ctx);
            }
        }
        H2::More(skip) => {
            if follow_h2(p, skip, cont, generation) {
                return Ok(only(verdict::PASS, stage::PENDING));
            }
        }
        H2::Not => {}
    }
    if cont {
        let _ = PENDING.remove(&p.key);
    }
    Ok(port_or_policy(ctx, p, cfg, port, true))
}

/// After a segment of an HTTP/2 stream that ends before its first HEADERS frame, whose next
/// frame starts `skip` bytes into the next segment: the first segment (`cont` false) makes
/// the stream's `PENDING` entry (phase `split::H2_STREAM`) and the flow FOLLOWING; a later one
/// moves the entry on. False when the stream is followed no further (too many segments, or
/// no room): it is not inspectable.
#[inline(never)]
fn follow_h2(p: &Pkt, skip: u32, cont: bool, generation: u8) -> bool {
    // A SYN (TCP Fast Open data) takes one sequence number before its payload.
    let syn = (p.tcp_flags & TCP_SYN != 0) as u32;
    let next_seq = p.seq.wrapping_add(p.payload_len).wrapping_add(syn);
    if cont {
        let Some(pv) = PENDING.get_ptr_mut(&p.key) else {
            return false;
        };
        // SAFETY: a map value pointer, valid for this program run.
        let pv = unsafe { &mut *pv };
        if pv.count + 1 >= split::H2_MAX_SEGMENTS {
            return false;
        }
        pv.next_seq = next_seq;
        pv.acc = skip;
        pv.count += 1;
        return true;
    }
    let Some(w) = SPLIT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU memory, used by this program run only.
    let v = unsafe { &mut (*w).pv };
    v.next_seq = next_seq;
    v.acc = skip;
    v.phase = split::H2_STREAM;
    v.count = 1;
    if PENDING.insert(&p.key, v, 0).is_err() {
        return false;
    }
    let head = flows::head(
        flow_state::FOLLOWING,
        verdict::NONE,
        stage::PENDING,
        generation,
        NO_SERVICE,
    );
    flows::insert(&p.key, head, 0, 0, false);
    true
}

/// The name in `Scratch::name` (described in `PKT_STATE`): looked up, decided and acted on,
/// else §7: the `meshclass_lookup` program, tail-called by the three name programs.
#[inline(always)]
pub fn try_lookup(ctx: &TcContext) -> Result<i32, i32> {
    let Some((st, cfg, port, _)) = stage_inputs() else {
        return Ok(only(verdict::PASS, stage::OTHER));
    };
    let p = &st.pkt;
    let (hit, n) = look_up(port.suffix_labels);
    if let Some(e) = hit {
        return Ok(name_hit(ctx, p, cfg, e, st.name_stage, n));
    }
    Ok(port_or_policy_after_name(ctx, p, cfg, port, true, n))
}

/// Normalizes and looks up the name in `Scratch::name` described in `PKT_STATE`; returns the
/// entry, if any, and the normalized length (lower-cased by the lookup's hash pass). Inlined: on this CPU every BPF-to-BPF call pays its
/// return through the return thunk (~10 ns), and the program's frame with `act_slow`'s stays
/// within the 512-byte limit.
#[inline(always)]
fn look_up(suffix_labels: u64) -> (Option<EntryValue>, usize) {
    let (Some(st), Some(s)) = (PKT_STATE.get_ptr(0), SCRATCH.get_ptr_mut(0)) else {
        return (None, 0);
    };
    // SAFETY: per-CPU memory, used by this program run only.
    let (st, s) = unsafe { (&*st, &mut *s) };
    let n = st.name_len as usize;
    let (generation, dport) = (st.generation & 1, st.pkt.key.dport);
    let n = names::normalize(s, n);
    (names::lookup(s, n, generation, dport, suffix_labels), n)
}

/// Hands the name described in `PKT_STATE` to `meshclass_lookup`; returns only if the tail
/// call failed.
#[inline(always)]
fn to_lookup(ctx: &TcContext) {
    // SAFETY: a tail call with the program's own context; it returns only on failure.
    unsafe { JUMP.tail_call(ctx, jump::LOOKUP) };
}

/// Records the name just extracted (`n` raw bytes in `Scratch::name`) for `meshclass_lookup`.
#[inline(always)]
fn describe_name(n: usize, name_stage: u8) -> bool {
    let Some(st) = PKT_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU state, used by this program run and its tail calls only.
    unsafe {
        (*st).name_len = n as u16;
        (*st).name_stage = name_stage;
    }
    true
}

/// Split ClientHellos (§6, §11): the `meshclass_split` program, tail-called by `meshclass`
/// for a payload on a PENDING flow, or a first payload on a TLS port that `split::starts`
/// does not call OTHER, with the packet in `PKT_STATE`. It
/// continues a ClientHello being followed, or starts following one that continues past this
/// first payload; anything else goes on to `meshclass_names`. A program of its own, so that
/// neither it nor the name stages add to the other's verification.
#[inline(always)]
pub fn try_split(ctx: &TcContext) -> Result<i32, i32> {
    let Some((st, cfg, port, generation)) = stage_inputs() else {
        return Ok(only(verdict::PASS, stage::OTHER));
    };
    let p = &st.pkt;
    if st.pending != 0 {
        // Only FOLLOWING flows look a ClientHello (or HTTP/2 stream) being followed up.
        if st.pending == flow_state::FOLLOWING {
            if let Some(pv) = PENDING.get_ptr_mut(&p.key) {
                // SAFETY: a map value pointer, valid for this program run.
                if unsafe { (*pv).phase } == split::H2_STREAM {
                    return Ok(continue_h2(ctx, p, cfg, port, pv));
                }
                return Ok(continue_split(ctx, p, cfg, port, pv));
            }
        }
        if port.name_kinds == 0 {
            // A first payload on a PENDING flow whose port lost its names: §7, after the
            // handshake.
            return Ok(port_or_policy(ctx, p, cfg, port, true));
        }
    }
    let kind = if port.name_kinds & name_kind::TLS != 0 {
        split::starts(ctx, p)
    } else {
        split::OTHER
    };
    if kind == split::TOO_LONG {
        return Ok(port_or_policy(ctx, p, cfg, port, true));
    }
    if kind == split::SPLIT_START {
        let r = start_split(p, split::follow(ctx, p, None), generation);
        if r == split::NEED_MORE {
            return Ok(only(verdict::PASS, stage::PENDING));
        }
        if r == split::COMPLETE {
            // Not reached (`starts` is false for a hello complete in the segment), but a
            // complete hello is judged as such, without the HTTP stages.
            if split_name(cfg) {
                to_lookup(ctx);
            }
            return Ok(port_or_policy(ctx, p, cfg, port, true));
        }
    }
    // SAFETY: a tail call with the program's own context; it returns only on failure.
    unsafe {
        JUMP.tail_call(ctx, jump::NAMES);
    }
    Ok(port_or_policy(ctx, p, cfg, port, true))
}

/// §7: the port's capture, else the outbound policy.
#[inline(always)]
fn port_or_policy(ctx: &TcContext, p: &Pkt, cfg: &Config, port: &PortValue, after: bool) -> i32 {
    port_or_policy_after_name(ctx, p, cfg, port, after, 0)
}

/// [`port_or_policy`] for a connection whose name (`name_len` bytes in `Scratch::name`; 0:
/// none) matched no entry: its decision event carries the name, so that `meshclass flows`
/// says which name was refused.
#[inline(always)]
fn port_or_policy_after_name(
    ctx: &TcContext,
    p: &Pkt,
    cfg: &Config,
    port: &PortValue,
    after: bool,
    name_len: usize,
) -> i32 {
    if port.has_capture == 1 {
        let mut e = port.capture;
        if after && e.verdict == verdict::REDIRECT {
            // Too late to redirect (a flow that waited for a name while a reload made its
            // port's capture redirect): applied as PASS, as for a name entry.
            cnt::inc(counter::LATE_REDIRECT);
            e.verdict = verdict::PASS;
        }
        return decide(
            ctx,
            p,
            cfg,
            &Decision::entry(e, stage::PORT, after, name_len),
        );
    }
    let v = blocked(cfg, to_group(p));
    decide(
        ctx,
        p,
        cfg,
        &Decision {
            verdict: v,
            stage: stage::POLICY,
            entry: None,
            after_handshake: after,
            name_len,
        },
    )
}

/// Whether `p` goes to a multicast or the limited broadcast address, which no ICMP error may
/// answer (RFC 1122 3.2.2, RFC 4443 2.4): its REJECT is a DROP.
#[inline(always)]
fn to_group(p: &Pkt) -> bool {
    let d = &p.key.daddr;
    if p.key.family == family::V4 {
        d[0] & 0xf0 == 0xe0 || d[..4] == [0xff; 4]
    } else {
        d[0] == 0xff
    }
}

/// The verdict of the outbound policy; REJECT as DROP when `no_reject`.
#[inline(always)]
fn blocked(cfg: &Config, no_reject: bool) -> u8 {
    if cfg.outbound_policy != policy::REGISTRY_ONLY {
        return verdict::PASS;
    }
    let v = if cfg.blocked_verdict == verdict::REJECT {
        verdict::REJECT
    } else {
        verdict::DROP
    };
    if no_reject && v == verdict::REJECT {
        verdict::DROP
    } else {
        v
    }
}

/// Counts a PASS/DROP that needs no action and returns its TC code.
#[inline(always)]
fn only(v: u8, st: u8) -> i32 {
    cnt::decided(v, st);
    TC_ACT_UNSPEC
}

/// A segment of a PENDING flow whose ClientHello is being followed (`pv`: its `PENDING`
/// entry): a retransmission waits, a gap goes to §7, the next segment continues the parse.
#[inline(always)]
fn continue_split(
    ctx: &TcContext,
    p: &Pkt,
    cfg: &Config,
    port: &PortValue,
    pv: *mut PendingValue,
) -> i32 {
    // SAFETY: a map value pointer, valid for this program run.
    let pv = unsafe { &mut *pv };
    let d = p.seq.wrapping_sub(pv.next_seq) as i32;
    if d < 0 {
        // A retransmission: nothing changes.
        return only(verdict::PASS, stage::PENDING);
    }
    if d == 0 {
        let r = split::follow(ctx, p, Some(pv));
        if r == split::NEED_MORE {
            return only(verdict::PASS, stage::PENDING);
        }
        let _ = PENDING.remove(&p.key);
        if r == split::COMPLETE && split_name(cfg) {
            to_lookup(ctx);
        }
    } else {
        // A gap: the hello is not inspectable.
        let _ = PENDING.remove(&p.key);
    }
    port_or_policy(ctx, p, cfg, port, true)
}

/// A segment of a FOLLOWING flow whose HTTP/2 stream is being followed to its first HEADERS
/// frame (`pv`: its `PENDING` entry): a retransmission waits, a gap goes to §7, the next
/// segment goes to `meshclass_http`.
#[inline(always)]
fn continue_h2(
    ctx: &TcContext,
    p: &Pkt,
    cfg: &Config,
    port: &PortValue,
    pv: *mut PendingValue,
) -> i32 {
    // SAFETY: a map value pointer, valid for this program run.
    let pv = unsafe { &*pv };
    let d = p.seq.wrapping_sub(pv.next_seq) as i32;
    if d < 0 {
        return only(verdict::PASS, stage::PENDING);
    }
    if d == 0 {
        if let Some(st) = PKT_STATE.get_ptr_mut(0) {
            // SAFETY: per-CPU state, used by this program run and its tail calls only.
            unsafe {
                (*st).h2_cont = 1;
                (*st).h2_from = pv.acc;
            }
            // SAFETY: a tail call with the program's own context; it returns only on failure.
            unsafe { JUMP.tail_call(ctx, jump::HTTP) };
        }
    }
    // A gap: the stream is not inspectable.
    let _ = PENDING.remove(&p.key);
    port_or_policy(ctx, p, cfg, port, true)
}

/// After the first segment of a ClientHello that continues past it: on `NEED_MORE` the
/// parse state (`SPLIT[0].pv`) becomes the flow's `PENDING` entry and the flow is FOLLOWING.
#[inline(never)]
fn start_split(p: &Pkt, r: u8, generation: u8) -> u8 {
    if r != split::NEED_MORE {
        return r;
    }
    let Some(w) = SPLIT.get_ptr(0) else {
        return split::NOT_HELLO;
    };
    // SAFETY: per-CPU memory, used by this program run only.
    if PENDING.insert(&p.key, unsafe { &(*w).pv }, 0).is_err() {
        return split::NOT_HELLO;
    }
    let head = flows::head(
        flow_state::FOLLOWING,
        verdict::NONE,
        stage::PENDING,
        generation,
        NO_SERVICE,
    );
    flows::insert(&p.key, head, 0, 0, false);
    r
}

/// The server name of a complete split ClientHello (`SPLIT[0].pv`), judged as in
/// `extract_tls` (ECH, name present): copied into `Scratch::name` and described for
/// `meshclass_lookup`; false when there is no name to look up.
#[inline(never)]
fn split_name(cfg: &Config) -> bool {
    let (Some(w), Some(s)) = (SPLIT.get_ptr(0), SCRATCH.get_ptr_mut(0)) else {
        return false;
    };
    // SAFETY: per-CPU memory, used by this program run only.
    let (v, s) = unsafe { (&(*w).pv, &mut *s) };
    let ech = v.flags & split::F_ECH != 0;
    if ech {
        cnt::inc(counter::ECH_SEEN);
    }
    let n = v.name_len as usize;
    if n == 0 || (ech && cfg.flags & config_flags::ECH_OUTER_SNI == 0) {
        return false;
    }
    cnt::inc(counter::SPLIT_HELLOS);
    s.name[..MAX_NAME_LEN].copy_from_slice(&v.name);
    describe_name(n, stage::SNI)
}

/// A name entry decided: REDIRECT is applied as PASS (the connection already reached its
/// server); the decision comes after the handshake.
#[inline(always)]
fn name_hit(ctx: &TcContext, p: &Pkt, cfg: &Config, e: EntryValue, st: u8, n: usize) -> i32 {
    let mut v = e.verdict;
    if v == verdict::REDIRECT {
        cnt::inc(counter::LATE_REDIRECT);
        v = verdict::PASS;
    }
    decide(
        ctx,
        p,
        cfg,
        &Decision {
            verdict: v,
            stage: st,
            entry: Some(e),
            after_handshake: true,
            name_len: n,
        },
    )
}

/// Extracts the TLS name and describes it for `meshclass_lookup`; false when there is none
/// (no complete ClientHello, no name, or hidden by ECH). Inlined, like `look_up`.
#[inline(always)]
fn extract_tls(ctx: &TcContext, p: &Pkt, cfg: &Config) -> bool {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    pull(ctx, p);
    let Hello::Complete { name_len, ech } = tls::parse(ctx, p, s) else {
        return false;
    };
    if ech {
        cnt::inc(counter::ECH_SEEN);
    }
    if name_len == 0 || (ech && cfg.flags & config_flags::ECH_OUTER_SNI == 0) {
        return false;
    }
    describe_name(name_len, stage::SNI)
}

/// The HTTP/1.x Host or, failing that, the HTTP/2 `:authority` of a first payload (`from`
/// `None`), as the port's kinds allow; or the `:authority` of a later segment of an HTTP/2
/// stream being followed, whose next frame starts at `from` (below the payload's length),
/// whatever the kinds have become. In `Scratch::name`: `H2::Name` (the host), or
/// `H2::More` for a segment that ends before the stream's first HEADERS frame.
#[inline(always)]
fn extract_http(ctx: &TcContext, p: &Pkt, kinds: u8, from: Option<usize>) -> H2 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return H2::Not;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let w = core::hint::black_box(http::load_window(ctx, p, s));
    if from.is_none() && kinds & name_kind::HTTP != 0 {
        let n = http::host(s, w);
        if n > 0 {
            return H2::Name(n);
        }
    }
    if from.is_some() || kinds & name_kind::H2 != 0 {
        return http::authority(s, w, p.payload_len as usize, from);
    }
    H2::Not
}

/// Makes the start of the payload linear for direct access.
#[inline(always)]
fn pull(ctx: &TcContext, p: &Pkt) {
    let want = p.payload_off + p.payload_len;
    let want = if want > 2048 { 2048 } else { want };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
}

/// A decision of steps 4-7.
struct Decision {
    verdict: u8,
    stage: u8,
    /// The decision came from a TCP payload (a handshake happened).
    after_handshake: bool,
    /// The deciding entry, if any.
    entry: Option<EntryValue>,
    /// Length of the name in `Scratch::name` that decided (0: none).
    name_len: usize,
}

impl Decision {
    /// A decision by an entry.
    #[inline(always)]
    fn entry(e: EntryValue, stage: u8, after_handshake: bool, name_len: usize) -> Self {
        Self {
            verdict: e.verdict,
            stage,
            after_handshake,
            entry: Some(e),
            name_len,
        }
    }
}

/// Records a decision of steps 4-7 (§8), counts it and acts on it. All inlined: on this CPU
/// every BPF-to-BPF call pays its return through the return thunk (~10 ns); a call of a
/// record function and one of the flow insert from it cost ~25 ns of every new connection.
/// Acting on REJECT and REDIRECT stays a function of its own (`act_slow`), whose frame and
/// the program's own add up to less than the 512-byte stack limit.
#[inline(always)]
fn decide(ctx: &TcContext, p: &Pkt, cfg: &Config, d: &Decision) -> i32 {
    let v = record(&p.key.words(), cfg, d);
    act(ctx, p, cfg, v, d.after_handshake)
}

/// Records a decision of steps 4-7 (§8) for the flow whose key is `w` and counts it; returns
/// its verdict.
#[inline(always)]
fn record(w: &FlowWords, cfg: &Config, d: &Decision) -> u8 {
    let (v, st, entry, name_len) = (d.verdict, d.stage, d.entry, d.name_len);
    let (service_id, entry_id) = match entry {
        Some(e) => (e.service_id, e.entry_id),
        None => (NO_SERVICE, 0),
    };
    let now = clock::now(cfg);
    // The entry records the registry's epoch: a UDP flow's is compared with the one in force
    // (`fresh`).
    let head = flows::head(flow_state::DECIDED, v, st, cfg.epoch(), service_id);
    flows::put_words(w, head, entry_id, now, false);
    let counts = cnt::cpu();
    if let (Some(c), true) = (counts, entry.is_some()) {
        cnt::entry_hit_in(c, entry_id);
    }
    if v == verdict::DROP || v == verdict::REJECT || cfg.flags & config_flags::EVENTS_ALL != 0 {
        event(&w.key_words(), service_id, entry_id, v, st, now, name_len);
    }
    if let Some(c) = counts {
        cnt::inc_in(c, counter::decided(v, st));
    }
    v
}

/// Sends a decision event; counts `EVENTS_LOST` when the ring buffer is full. The header is
/// written in 8-byte words into `Scratch::ev_head`, right before the name it already holds,
/// and the whole `Event` goes out with one `bpf_ringbuf_output`: building it in a reserved
/// record took a byte-by-byte `memset` and `memcpy` call (the BPF backend does not inline
/// them), and copying the name word by word there exceeded the verifier's budget. Bytes of
/// the name past `name_len` are unspecified.
#[inline(always)]
fn event(key: &[u64; 5], service_id: u32, entry_id: u32, v: u8, st: u8, now: u64, name_len: usize) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let name_len = if name_len > 0 && name_len < MAX_NAME_LEN {
        name_len
    } else {
        0
    };
    // SAFETY: per-CPU scratch, used by this program run only; `Scratch` is 8-aligned and
    // `ev_head` then `name` are an `Event` (asserted in maps.rs).
    let ev = unsafe {
        let w = (*s).ev_head.as_mut_ptr();
        core::ptr::write_volatile(w, now);
        for (i, k) in key.iter().enumerate() {
            core::ptr::write_volatile(w.add(1 + i), *k);
        }
        core::ptr::write_volatile(w.add(6), service_id as u64 | (entry_id as u64) << 32);
        core::ptr::write_volatile(
            w.add(7),
            v as u64 | (st as u64) << 8 | (name_len as u64) << 16,
        );
        &*(w as *const Event)
    };
    if EVENTS.output::<Event>(ev, 0).is_err() {
        cnt::inc(counter::EVENTS_LOST);
    }
}

/// The layout `event` writes: the header fields at their word offsets.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Event, flow) == 8 && offset_of!(Event, service_id) == 48);
    assert!(offset_of!(Event, entry_id) == 52 && offset_of!(Event, verdict) == 56);
    assert!(offset_of!(Event, stage) == 57 && offset_of!(Event, name_len) == 58);
    assert!(offset_of!(Event, name) == 64 && size_of::<Event>() == 64 + MAX_NAME_LEN);
};
