//! The dataplane: loads the TC classifier, writes compiled plans into its maps, and runs it on
//! packets (BPF_PROG_TEST_RUN) for tests and benchmarks.

mod cuckoo;
mod desired;
#[cfg(test)]
mod desired_ref;
mod error;
mod exact;
mod flowkey;
mod names;
mod ports;
mod shared;
mod writer;

use std::path::Path;

use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use classifier_common::{
    capacity, counter, flow_state, globals, jump, maps, stage, verdict, FlowKey, FlowValue, Layout,
    LAYOUT_VERSION, NO_SERVICE,
};

pub use desired::normalize_name;
pub use error::DataplaneError;
pub use flowkey::{flow_key, PinnedFlows};
pub use writer::{ApplyReport, MapWriter};

use crate::{plan::Plan, settings::Settings};

/// Name of the outbound (TC ingress) program in the object.
pub const PROGRAM: &str = "meshclass";
/// Name of the TLS name-stage program, tail-called by [`PROGRAM`] through `JUMP`.
pub const NAMES_PROGRAM: &str = "meshclass_names";
/// The HTTP/1.x Host and HTTP/2 `:authority` stages, tail-called by [`NAMES_PROGRAM`].
pub const HTTP_PROGRAM: &str = "meshclass_http";
/// Name of the split-ClientHello program, tail-called by [`PROGRAM`] through `JUMP`.
pub const SPLIT_PROGRAM: &str = "meshclass_split";
/// The name lookup (normalize, hash, exact then `*.` suffixes) and the decision on it,
/// tail-called by the three programs above once they have extracted a name.
pub const LOOKUP_PROGRAM: &str = "meshclass_lookup";
/// Name of the inbound (TC egress) program in the object.
pub const INBOUND_PROGRAM: &str = "meshclass_inbound";
/// The clock sample run once at load to measure the kernel's tick (never attached).
pub const CLOCK_PROGRAM: &str = "meshclass_clock";

/// Map sizes, in entries per generation for the generation-tagged maps (exact, cidr, names:
/// the trie is created twice as large, the exact table with [`Capacities::exact_buckets`]
/// buckets, the name index with [`Capacities::name_buckets`] and `NAMES` with
/// [`Capacities::name_records`] records). The ports table has a slot for every TCP and UDP
/// port of each generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub exact: u32,
    pub cidr: u32,
    pub names: u32,
    /// Tracked connections: `FLOWS` gets `flows / FLOW_WAYS` buckets, rounded up to a power
    /// of two ([`Capacities::flow_buckets`]).
    pub flows: u32,
    pub pending: u32,
    pub entry_ids: u32,
    pub events_bytes: u32,
}

impl Capacities {
    /// Buckets of the exact table (`EXACT`, four slots each, both generations): three slots
    /// in four in use when both generations hold `exact` entries.
    pub fn exact_buckets(&self) -> u32 {
        cuckoo::buckets_for(self.exact)
    }

    /// Buckets of the name index (`NAME_INDEX`, four slots each, both generations), sized as
    /// the exact table.
    pub fn name_buckets(&self) -> u32 {
        cuckoo::buckets_for(self.names)
    }

    /// Records of `NAMES`: both generations, and [`NAME_RECORDS_SPARE`] more, so that an entry
    /// changed in a full table gets its new record before the old one is freed.
    pub fn name_records(&self) -> u32 {
        self.names
            .saturating_mul(2)
            .saturating_add(NAME_RECORDS_SPARE)
    }

    /// Names per generation that `records` records of `NAMES` hold (the inverse of
    /// [`Capacities::name_records`]).
    pub fn names_of(records: u32) -> u32 {
        records.saturating_sub(NAME_RECORDS_SPARE) / 2
    }

    /// Buckets of the flow table: room for `flows` connections, a power of two.
    pub fn flow_buckets(&self) -> u32 {
        self.flows
            .div_ceil(classifier_common::FLOW_WAYS as u32)
            .max(1)
            .next_power_of_two()
    }

    /// These sizes as a dataplane loaded with them reports them ([`Dataplane::capacities`]):
    /// rounded as its maps are.
    pub fn as_loaded(&self) -> Capacities {
        Capacities {
            exact: cuckoo::capacity_of(self.exact_buckets()),
            names: Capacities::names_of(self.name_records()),
            flows: self.flow_buckets() * classifier_common::FLOW_WAYS as u32,
            ..*self
        }
    }
}

/// Spare records of `NAMES` ([`Capacities::name_records`]).
const NAME_RECORDS_SPARE: u32 = 8;

impl Default for Capacities {
    fn default() -> Self {
        Self {
            exact: capacity::EXACT,
            cidr: capacity::CIDR,
            names: capacity::NAMES,
            flows: capacity::FLOWS,
            pending: capacity::PENDING,
            entry_ids: capacity::ENTRY_IDS,
            events_bytes: capacity::EVENTS_BYTES,
        }
    }
}

/// The uapi `struct __sk_buff` as BPF_PROG_TEST_RUN takes it in (`ctx_in`); only the GSO
/// fields are set, the kernel refuses most others.
#[repr(C)]
struct SkBuffCtx {
    /// `len` through `wire_len`.
    _head: [u32; 41],
    gso_segs: u32,
    _sk: u64,
    gso_size: u32,
    /// `tstamp_type` and its padding, `hwtstamp`.
    _tail: [u32; 3],
}
const _: () = {
    assert!(size_of::<SkBuffCtx>() == 192);
    assert!(std::mem::offset_of!(SkBuffCtx, gso_segs) == 164);
    assert!(std::mem::offset_of!(SkBuffCtx, gso_size) == 176);
};

/// What the program decided for one packet run through BPF_PROG_TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecision {
    /// The TC return code (-1 UNSPEC, 0 OK, 2 SHOT, 7 REDIRECT).
    pub retval: i32,
    /// The verdict counted for the packet (`classifier_common::verdict`).
    pub verdict: u8,
    /// The stage counted for the packet (`classifier_common::stage`).
    pub stage: u8,
    /// Service of the flow entry written for the packet, else `NO_SERVICE`.
    pub service_id: u32,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
    /// Kernel time per run.
    pub duration_ns: u64,
}

/// One sample of the kernel's jiffies and CLOCK_MONOTONIC, read together by [`CLOCK_PROGRAM`].
fn clock_sample(ebpf: &mut Ebpf) -> Result<(u64, u64), DataplaneError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(CLOCK_PROGRAM)
        .ok_or(DataplaneError::MissingProgram(CLOCK_PROGRAM))?
        .try_into()
        .map_err(|e| DataplaneError::TestRun(Box::new(e)))?;
    let packet = [0u8; 64];
    let mut out = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&packet);
    opts.data_out = Some(&mut out);
    prog.test_run(opts)
        .map_err(|e| DataplaneError::TestRun(Box::new(e)))?;
    let word = |i: usize| u64::from_ne_bytes(out[i..i + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8)))
}

/// The first sample after the jiffies next change: its jiffy and the time it started, to the
/// few microseconds between two samples (samples are taken back to back, for at most 3 s).
fn next_jiffy(ebpf: &mut Ebpf) -> Result<(u64, u64), DataplaneError> {
    let started = std::time::Instant::now();
    let (j0, _) = clock_sample(ebpf)?;
    loop {
        let (j, t) = clock_sample(ebpf)?;
        if j != j0 {
            return Ok((j, t));
        }
        if started.elapsed() > std::time::Duration::from_secs(3) {
            return Err(DataplaneError::Clock(format!(
                "the jiffies stayed at {j0} for 3 s"
            )));
        }
    }
}

/// The kernel's tick length and CLOCK_MONOTONIC at jiffy 0 (`Layout::tick_ns`,
/// `Layout::clock_base`): the start times of two jiffies at least 20 ms apart, each caught by
/// sampling back to back until the jiffies change (the kernel advances them on a grid of whole
/// ticks, so the two starts are whole ticks apart); the tick is that of the nearest usual HZ
/// within 2%, else the measured one. `clock_ns(j)` is then the start of jiffy `j`.
fn measure_clock(ebpf: &mut Ebpf) -> Result<(u64, u64), DataplaneError> {
    let (j0, t0) = next_jiffy(ebpf)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (j1, t1) = next_jiffy(ebpf)?;
    let ticks = j1.wrapping_sub(j0);
    if ticks == 0 || t1 <= t0 {
        return Err(DataplaneError::Clock(format!(
            "jiffies {j0} at {t0} ns, {j1} at {t1} ns"
        )));
    }
    let measured = (t1 - t0) as f64 / ticks as f64;
    let tick_ns = [
        100u64, 250, 300, 1000, 24, 32, 48, 64, 128, 200, 256, 500, 1024,
    ]
    .iter()
    .map(|hz| (1_000_000_000 + hz / 2) / hz)
    .find(|&t| (t as f64 - measured).abs() <= 0.02 * t as f64)
    .unwrap_or(measured.round() as u64)
    .max(1);
    Ok((tick_ns, t1.wrapping_sub(j1.wrapping_mul(tick_ns))))
}

/// The loaded program and its maps (or, re-adopted after a restart, the pinned maps alone).
pub struct Dataplane {
    writer: MapWriter,
}

impl Dataplane {
    /// Loads the embedded object with `caps`, loads both programs (not attached), and stamps
    /// the layout; the registry starts empty at generation 0 with default settings.
    pub fn load(caps: &Capacities) -> Result<Self, DataplaneError> {
        Self::load_seeded(caps, None)
    }

    /// [`Dataplane::load`] with the layout's hash seeds derived from `seed` (random when
    /// `None`): a test that prints its seed can then be replayed exactly, flow table included.
    pub fn load_seeded(caps: &Capacities, seed: Option<u64>) -> Result<Self, DataplaneError> {
        let mut state = seed;
        let mut next_seed = || match state.as_mut() {
            // SplitMix64.
            Some(x) => {
                *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            None => writer::random_seed(),
        };
        if crate::CLASSIFIER_OBJECT.is_empty() {
            return Err(DataplaneError::EmptyObject);
        }
        if caps.name_records() > classifier_common::NAME_VALUES_MAX {
            return Err(DataplaneError::Names(format!(
                "a names capacity of {} needs {} records; the index addresses at most {} \
                 (--max-names)",
                caps.names,
                caps.name_records(),
                classifier_common::NAME_VALUES_MAX
            )));
        }
        // The layout, but for the clock (measured once the programs are loaded): its sizes and
        // seeds go into the program's read-only globals as well as into `LAYOUT`.
        let mut layout = Layout {
            version: LAYOUT_VERSION,
            flow_mask: caps.flow_buckets() - 1,
            flow_seed: next_seed(),
            tick_ns: 0,
            clock_base: 0,
            exact_buckets: caps.exact_buckets(),
            name_buckets: caps.name_buckets(),
            exact_seed: next_seed(),
            name_seed: next_seed(),
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::FLOW_MASK, &layout.flow_mask, true)
            .override_global(globals::FLOW_SEED, &layout.flow_seed, true)
            .override_global(globals::EXACT_BUCKETS, &layout.exact_buckets, true)
            .override_global(globals::EXACT_SEED, &layout.exact_seed, true)
            .override_global(globals::NAME_BUCKETS, &layout.name_buckets, true)
            .override_global(globals::NAME_SEED, &layout.name_seed, true)
            .map_max_entries(maps::EXACT, caps.exact_buckets())
            .map_max_entries(maps::CIDR, 2 * caps.cidr)
            .map_max_entries(maps::NAMES, caps.name_records())
            .map_max_entries(maps::NAME_INDEX, caps.name_buckets())
            .map_max_entries(maps::FLOWS, caps.flow_buckets())
            .map_max_entries(maps::PENDING, caps.pending)
            .map_max_entries(maps::ENTRY_HITS, caps.entry_ids)
            .map_max_entries(maps::EVENTS, caps.events_bytes);
        let mut ebpf = loader
            .load(crate::CLASSIFIER_OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        for name in [
            PROGRAM,
            NAMES_PROGRAM,
            HTTP_PROGRAM,
            SPLIT_PROGRAM,
            LOOKUP_PROGRAM,
            INBOUND_PROGRAM,
            CLOCK_PROGRAM,
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|e| DataplaneError::Program {
                    name,
                    source: Box::new(e),
                })?;
            prog.load().map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
        }
        for (index, name) in [
            (jump::NAMES, NAMES_PROGRAM),
            (jump::HTTP, HTTP_PROGRAM),
            (jump::SPLIT, SPLIT_PROGRAM),
            (jump::LOOKUP, LOOKUP_PROGRAM),
        ] {
            let fd = {
                let prog: &SchedClassifier = ebpf
                    .program(name)
                    .ok_or(DataplaneError::MissingProgram(name))?
                    .try_into()
                    .map_err(|e| DataplaneError::Program {
                        name,
                        source: Box::new(e),
                    })?;
                prog.fd()
                    .map_err(|e| DataplaneError::Program {
                        name,
                        source: Box::new(e),
                    })?
                    .try_clone()
                    .map_err(DataplaneError::Fd)?
            };
            let m = ebpf
                .map_mut(maps::JUMP)
                .ok_or(DataplaneError::MissingMap(maps::JUMP))?;
            let mut jump =
                aya::maps::ProgramArray::try_from(m).map_err(DataplaneError::map(maps::JUMP))?;
            jump.set(index, &fd, 0)
                .map_err(DataplaneError::map(maps::JUMP))?;
        }
        (layout.tick_ns, layout.clock_base) = measure_clock(&mut ebpf)?;
        let writer = MapWriter::new_fresh(ebpf, *caps, layout)?;
        Ok(Self { writer })
    }

    /// Re-adopts the maps pinned in `dir` (one file per map name): the registry in force is
    /// read back from them, so the next `apply` writes only the difference. Programs are not
    /// loaded: `test_run` and `ebpf_mut` are for a dataplane from [`Dataplane::load`].
    pub fn from_pins(dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            writer: MapWriter::open_pinned(dir)?,
        })
    }

    fn ebpf(&mut self) -> Result<&mut Ebpf, DataplaneError> {
        match &mut self.writer.store {
            writer::Store::Loaded(e) => Ok(e),
            writer::Store::Pinned(_) => Err(DataplaneError::MissingProgram(PROGRAM)),
        }
    }

    /// The map sizes in force.
    pub fn capacities(&self) -> Capacities {
        *self.writer.capacities()
    }

    /// Writes `plan` and `settings` into the maps (see [`MapWriter::apply`]).
    pub fn apply(
        &mut self,
        plan: &Plan,
        settings: &Settings,
    ) -> Result<ApplyReport, DataplaneError> {
        self.writer.apply(plan, settings)
    }

    /// Runs the outbound program once on `packet` (an Ethernet frame).
    pub fn test_run(&mut self, packet: &[u8]) -> Result<KernelDecision, DataplaneError> {
        self.test_run_ctx(packet, None)
    }

    /// [`Dataplane::test_run`] on a GSO packet of `gso_segs` segments of `gso_size` bytes, as a
    /// workload's TCP stack hands them to its interface (the frame itself stays within what
    /// BPF_PROG_TEST_RUN takes, a page).
    pub fn test_run_gso(
        &mut self,
        packet: &[u8],
        gso_size: u32,
        gso_segs: u32,
    ) -> Result<KernelDecision, DataplaneError> {
        let ctx = SkBuffCtx {
            _head: [0; 41],
            gso_segs,
            _sk: 0,
            gso_size,
            _tail: [0; 3],
        };
        // SAFETY: SkBuffCtx is plain old data of 192 bytes, without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ctx as *const SkBuffCtx).cast::<u8>(),
                size_of::<SkBuffCtx>(),
            )
        };
        self.test_run_ctx(packet, Some(bytes))
    }

    fn test_run_ctx(
        &mut self,
        packet: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<KernelDecision, DataplaneError> {
        let before = self.writer.counters()?;
        let mut out = vec![0u8; packet.len() + 1024];
        let (retval, size, duration_ns) = self.run_ctx(PROGRAM, packet, ctx, &mut out, 1)?;
        out.truncate(size);
        let after = self.writer.counters()?;
        let delta = |i: u32| after[i as usize].saturating_sub(before[i as usize]);
        let v = (0..verdict::COUNT as u32)
            .find(|&v| delta(counter::BY_VERDICT + v) > 0)
            .unwrap_or(0) as u8;
        let st = (0..stage::COUNT as u32)
            .find(|&s| delta(counter::BY_STAGE + s) > 0)
            .unwrap_or(0) as u8;
        let mut service_id = NO_SERVICE;
        if st != stage::FLOW && st != stage::PENDING && st != stage::OTHER {
            if let Some(key) = flow_key(packet) {
                if let Some(f) = self.writer.flow(&key)? {
                    if f.state == flow_state::DECIDED {
                        service_id = f.service_id;
                    }
                }
            }
        }
        Ok(KernelDecision {
            retval,
            verdict: v,
            stage: st,
            service_id,
            data_out: out,
            duration_ns,
        })
    }

    /// Average kernel time per run of `packet`, over `repeat` runs.
    pub fn bench(&mut self, packet: &[u8], repeat: u32) -> Result<u64, DataplaneError> {
        let mut out = vec![0u8; packet.len() + 1024];
        Ok(self.run(PROGRAM, packet, &mut out, repeat)?.2)
    }

    /// The classifier program's file descriptor, for benchmarks that run it on several CPUs
    /// at once.
    pub fn program_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, DataplaneError> {
        use std::os::fd::AsFd as _;
        let prog = self
            .ebpf()?
            .program(PROGRAM)
            .ok_or(DataplaneError::MissingProgram(PROGRAM))?;
        Ok(prog
            .fd()
            .map_err(|e| DataplaneError::TestRun(Box::new(e)))?
            .as_fd())
    }

    /// Runs the inbound program (TC egress, toward the workload) once on `packet`; returns its
    /// TC code.
    pub fn test_run_inbound(&mut self, packet: &[u8]) -> Result<i32, DataplaneError> {
        let mut out = vec![0u8; packet.len() + 64];
        Ok(self.run(INBOUND_PROGRAM, packet, &mut out, 1)?.0)
    }

    fn run(
        &mut self,
        name: &'static str,
        packet: &[u8],
        out: &mut [u8],
        repeat: u32,
    ) -> Result<(i32, usize, u64), DataplaneError> {
        self.run_ctx(name, packet, None, out, repeat)
    }

    fn run_ctx(
        &mut self,
        name: &'static str,
        packet: &[u8],
        ctx: Option<&[u8]>,
        out: &mut [u8],
        repeat: u32,
    ) -> Result<(i32, usize, u64), DataplaneError> {
        let prog: &mut SchedClassifier = self
            .ebpf()?
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(|e| DataplaneError::TestRun(Box::new(e)))?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.ctx_in = ctx;
        opts.data_out = Some(out);
        opts.repeat = repeat;
        let r = prog
            .test_run(opts)
            .map_err(|e| DataplaneError::TestRun(Box::new(e)))?;
        Ok((
            r.return_value as i32,
            r.data_size_out as usize,
            r.duration.as_nanos() as u64,
        ))
    }

    /// Per-CPU counters summed, indexed by `classifier_common::counter`.
    pub fn counters(&self) -> Result<Vec<u64>, DataplaneError> {
        self.writer.counters()
    }

    /// Hits of every entry id (`ENTRY_HITS`), indexed by id.
    pub fn entry_hits(&self) -> Result<Vec<u64>, DataplaneError> {
        self.writer.all_entry_hits()
    }

    /// Hits of entry `id`.
    pub fn entry_hit(&self, id: u32) -> Result<u64, DataplaneError> {
        self.writer.entry_hits(id)
    }

    /// Elements in use per map (registry maps: the active generation).
    pub fn fill_levels(&self) -> Result<Vec<(String, usize)>, DataplaneError> {
        self.writer.fill_levels()
    }

    /// The flow table's stamp: its bucket mask and hash seed (`LAYOUT[0]`).
    pub fn layout(&self) -> Result<Layout, DataplaneError> {
        self.writer.layout()
    }

    /// The flow table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        self.writer.flows()
    }

    /// Empties the flow table.
    pub fn clear_flows(&mut self) -> Result<(), DataplaneError> {
        self.writer.clear_flows()
    }

    /// The loaded object, to attach and pin its programs and maps.
    ///
    /// # Panics
    /// On a dataplane re-adopted with [`Dataplane::from_pins`], which has no object.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        match &mut self.writer.store {
            writer::Store::Loaded(e) => e,
            writer::Store::Pinned(_) => panic!("a dataplane opened from pins has no loaded object"),
        }
    }

    /// The map writer.
    pub fn writer(&self) -> &MapWriter {
        &self.writer
    }

    /// The map writer, mutable.
    pub fn writer_mut(&mut self) -> &mut MapWriter {
        &mut self.writer
    }

    /// The entry id given to each entry of `plan` (the plan last applied), by index into
    /// `Plan::entries`.
    pub fn entry_ids(&self, plan: &Plan) -> Vec<u32> {
        let ids = self.writer.entry_ids();
        if ids.len() == plan.entries.len() {
            ids.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Pins every map in `dir` (which must be on bpffs); reopen with [`MapWriter::open_pinned`].
    pub fn pin_maps(&self, dir: &Path) -> Result<(), DataplaneError> {
        self.writer.pin(dir)
    }
}
