//! The baseline for per-packet costs: an empty TC program (`r0 = TC_ACT_UNSPEC; exit`) loaded
//! straight through the bpf(2) system call, and run with BPF_PROG_TEST_RUN like the classifier.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    sync::Barrier,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// An empty TC program.
pub struct EmptyProgram {
    fd: OwnedFd,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

impl EmptyProgram {
    /// Loads the program.
    pub fn load() -> io::Result<Self> {
        // mov64 r0, -1 (TC_ACT_UNSPEC); exit
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        attr.prog_name[..5].copy_from_slice(b"empty");
        // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_LOAD and outlives the call.
        let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: the kernel returned a new file descriptor that we now own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Runs the program `repeat` times on `packet`.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> io::Result<TestRun> {
        let r = test_run_fd(self.fd.as_fd(), packet, repeat)?;
        assert_eq!(
            r.retval as i32, -1,
            "the empty program returns TC_ACT_UNSPEC"
        );
        Ok(r)
    }

    /// The program's file descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One BPF_PROG_TEST_RUN: a program run `repeat` times on one packet.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return value.
    pub retval: u32,
    /// The kernel's mean ns per run, in whole ns (rounded down): at 7.9 ns a run, 7.
    pub kernel_ns: u32,
    /// The mean ns per run by the monotonic clock around the call, to a fraction of a ns. The
    /// call's own work (copying the packet in and out, ~1 µs) adds under 0.01 ns a run at the
    /// bench's 200,000 repeats; a ratio of two runs whose kernel figures are whole ns can be
    /// off by up to 1/7 at this machine's 7-8 ns baseline, this one cannot.
    pub ns: f64,
}

/// Runs TC program `fd` `repeat` times on `packet` (BPF_PROG_TEST_RUN).
pub fn test_run_fd(fd: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; packet.len() + 1024];
    let mut attr = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_TEST_RUN; buffers outlive it.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    let elapsed = start.elapsed();
    Ok(TestRun {
        retval: attr.retval,
        kernel_ns: attr.duration,
        ns: elapsed.as_nanos() as f64 / f64::from(repeat.max(1)),
    })
}

/// The bpf(2) command `cmd` with `attr`; its non-negative result, else the OS error.
///
/// # Safety
/// `attr` is the `bpf_attr` prefix `cmd` expects, and the buffers it points to outlive the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller's promise.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Runs TC program `fd` on CPUs 0, 1, ... at once, CPU `i` on `packets[i]`, `repeat` times
/// each (one thread per CPU, pinned, started together); returns each CPU's run. Shared cache
/// lines the program writes (a counter every CPU adds to) cost here what they cost a node's
/// CPUs classifying at once, which one CPU alone never shows.
pub fn test_run_on_cpus(
    fd: BorrowedFd<'_>,
    packets: &[Vec<u8>],
    repeat: u32,
) -> io::Result<Vec<TestRun>> {
    let start = Barrier::new(packets.len());
    std::thread::scope(|s| {
        let runs: Vec<_> = packets
            .iter()
            .enumerate()
            .map(|(cpu, p)| {
                let start = &start;
                s.spawn(move || {
                    pin_to_cpu(cpu)?;
                    start.wait();
                    test_run_fd(fd, p, repeat)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a test-run thread panicked"))
            .collect()
    })
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
