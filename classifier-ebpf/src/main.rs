//! The meshclass TC classifier: `meshclass` at TC ingress of a workload's host-side interface
//! classifies the workload's outbound packets (docs/decision.md); `meshclass_inbound` at TC
//! egress of the same interface records connections that others open to the workload.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics, asm_experimental_arch))]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "core_intrinsics gives the program branch hints"
    )
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::needless_borrows_for_generic_args,
        reason = "map keys and values go by reference: a copy would land on the 512-byte stack"
    )
)]

#[cfg(target_arch = "bpf")]
mod prog;

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{macros::classifier, programs::TcContext};

    use crate::prog::{classify, clock, inbound};

    // Each entry is `#[inline(always)]`: the macro wraps it in the exported function, and a
    // wrapper that calls it pays a BPF-to-BPF call and return on every packet.

    /// Classifies one outbound packet of a workload.
    #[classifier]
    #[inline(always)]
    pub fn meshclass(ctx: TcContext) -> i32 {
        match classify::try_classify(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// The TLS SNI stage, tail-called by `meshclass`.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_names(ctx: TcContext) -> i32 {
        match classify::try_names(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// The HTTP/1.x Host and HTTP/2 `:authority` stages, tail-called by `meshclass_names`.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_http(ctx: TcContext) -> i32 {
        match classify::try_http(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// Split ClientHellos, tail-called by `meshclass`; goes on to `meshclass_names`.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_split(ctx: TcContext) -> i32 {
        match classify::try_split(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// The name lookup and the decision on it, tail-called by the three programs above.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_lookup(ctx: TcContext) -> i32 {
        match classify::try_lookup(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// Records connections opened to the workload so that its replies pass.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_inbound(ctx: TcContext) -> i32 {
        match inbound::try_inbound(&ctx) {
            Ok(v) | Err(v) => v,
        }
    }

    /// The clock sample user space takes at load (`Layout::tick_ns`); never attached.
    #[classifier]
    #[inline(always)]
    pub fn meshclass_clock(ctx: TcContext) -> i32 {
        clock::sample(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
