//! Real-KVM test harness: a tiny real-mode guest driven through Linux KVM with either the
//! split irqchip (I/O APIC in userspace, LAPIC in the kernel) or the in-kernel irqchip.
//!
//! It is a Rust port of `tools/kvm-oracle` (oracle.c, guest.S) and keeps its protocol and
//! its two host quirks in mind (see that README):
//! 1. the LAPIC of this PVM host EOIs an interrupt at delivery, so an "in service" vector is
//!    planted with `KVM_SET_LAPIC` while the guest sits at IF=0 ([`Vcpu::plant_in_service`]);
//! 2. requests raised by an EOI are serviced on the next `KVM_RUN`, so do one
//!    [`Vcpu::ping`] round trip after each planted EOI ([`Vcpu::guest_eoi`] does).
//!
//! The `support` module of the `kvm` test binary (`tests/kvm/main.rs`), and included by the
//! `kvm_split_irqchip` example (`#[path = ...] mod kvm_support;`), so it is self-contained
//! and everything in it is ordinary code.
//!
//! Every `KVM_RUN` is bounded: a watchdog thread signals the vCPU thread (and sets
//! `immediate_exit` from the signal handler) when the run exceeds its time slot, so a
//! halted vCPU never hangs a test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
    KVM_IRQCHIP_IOAPIC, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, KVMIO,
    KvmIrqRouting, kvm_enable_cap, kvm_irq_level, kvm_irq_routing_entry, kvm_irqchip,
    kvm_lapic_state, kvm_mp_state, kvm_msi, kvm_regs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_iowr_nr;

// `KVM_IRQ_LINE_STATUS` (kvm-ioctls only wraps `KVM_IRQ_LINE`, which drops the status).
ioctl_iowr_nr!(KVM_IRQ_LINE_STATUS, KVMIO, 0x67, kvm_irq_level);

/// Reserved I/O APIC pins of the split irqchip (`KVM_ENABLE_CAP` args[0]).
pub const NR_IOAPIC_PINS: u32 = 24;
/// Guest RAM size (at GPA 0).
pub const MEM_SIZE: usize = 1 << 20;
/// Where the guest is loaded and entered (CS=0, IP=LOAD).
pub const LOAD: u64 = 0x1000;

/// Lowest vector with a guest handler.
pub const FIRST_VECTOR: u8 = 0x20;
/// Highest vector with a guest handler.
pub const LAST_VECTOR: u8 = 0xEF;

/// Guest ports (see [`GUEST_CODE`]).
pub mod port {
    /// out: ready (x2APIC on, SVR enabled, TPR 0; IF still 0).
    pub const READY: u16 = 0x10;
    /// out: handler for vector `al` entered (IF=0).
    pub const HANDLER: u16 = 0x11;
    /// out: handler for vector `al` wrote its EOI (IF stays 0 until its iret).
    pub const HANDLER_EOI: u16 = 0x12;
    /// out (32 bit): the ISR word holding the handler's vector, as the guest read it.
    pub const GUEST_ISR: u16 = 0x15;
    /// in: the idle loop asks for its next [`super::Cmd`].
    pub const CMD: u16 = 0x16;
    /// out: EOI written from the idle loop.
    pub const IDLE_EOI: u16 = 0x17;
    /// out: ping answered.
    pub const PING: u16 = 0x18;
    /// in (32 bit): the operands of a [`super::Cmd::Wrmsr`], in turn: ECX, EDX, EAX.
    pub const WRMSR_ARG: u16 = 0x19;
    /// out: the `wrmsr` of a [`super::Cmd::Wrmsr`] was executed.
    pub const WRMSR_DONE: u16 = 0x1a;
    /// in: a device status read from the idle loop ([`super::Cmd::Status`]).
    pub const STATUS: u16 = 0x1b;
    /// out (32 bit): the value a [`super::Cmd::MmioRead`] read.
    pub const MMIO_READ_VALUE: u16 = 0x1c;
    /// out: the store of a [`super::Cmd::MmioWrite`] was executed.
    pub const MMIO_WRITE_DONE: u16 = 0x1d;
    /// in: the INTx handler's device status read, at `INTX_STATUS | vector`
    /// ([`super::TestVm::use_intx_handler`]).
    pub const INTX_STATUS: u16 = 0x1000;
}

// ---- the guest --------------------------------------------------------------------------

/// The guest's code from GPA 0x1000 (16-bit real mode). Assembled once from the source in
/// the comments (gcc `.code16`, objdump); gcc is not needed at run time. Handler stubs for
/// vectors [`FIRST_VECTOR`]..=[`LAST_VECTOR`] follow at [`STUBS_OFFSET`], see
/// [`guest_image`].
#[rustfmt::skip]
pub const GUEST_CODE: &[u8] = &[
    0xfa,                               // 00 cli
    0x31, 0xc0,                         // 01 xor  ax, ax
    0x8e, 0xd8,                         // 03 mov  ds, ax
    0x8e, 0xd0,                         // 05 mov  ss, ax
    0xbc, 0x00, 0x70,                   // 07 mov  sp, 0x7000
    0xbf, 0x80, 0x00,                   // 0a mov  di, 0x20*4          ; IVT slot of vector 0x20
    0xb8, 0x00, 0x11,                   // 0d mov  ax, 0x1100          ; its stub (LOAD + STUBS_OFFSET)
    0x89, 0x05,                         // 10 1: mov [di], ax          ; IP
    0xc7, 0x45, 0x02, 0x00, 0x00,       // 12 mov  word [di+2], 0      ; CS
    0x83, 0xc0, 0x08,                   // 17 add  ax, 8               ; STUB_SIZE
    0x83, 0xc7, 0x04,                   // 1a add  di, 4
    0x81, 0xff, 0xc0, 0x03,             // 1d cmp  di, 0xf0*4          ; up to LAST_VECTOR
    0x72, 0xed,                         // 21 jb   1b
    0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, // 23 mov  ecx, 0x1b           ; IA32_APIC_BASE
    0x0f, 0x32,                         // 29 rdmsr
    0x66, 0x0d, 0x00, 0x0c, 0x00, 0x00, // 2b or   eax, 0xc00          ; EN | EXTD (x2APIC)
    0x0f, 0x30,                         // 31 wrmsr
    0x66, 0xb9, 0x0f, 0x08, 0x00, 0x00, // 33 mov  ecx, 0x80f          ; SVR
    0x66, 0xb8, 0xff, 0x01, 0x00, 0x00, // 39 mov  eax, 0x1ff          ; enabled, spurious 0xff
    0x66, 0x31, 0xd2,                   // 3f xor  edx, edx
    0x0f, 0x30,                         // 42 wrmsr
    0x66, 0xb9, 0x08, 0x08, 0x00, 0x00, // 44 mov  ecx, 0x808          ; TPR
    0x66, 0x31, 0xc0,                   // 4a xor  eax, eax            ; = 0
    0x0f, 0x30,                         // 4d wrmsr
    0xe6, 0x10,                         // 4f out  0x10, al            ; ready
    // idle:
    0xe4, 0x16,                         // 51 in   al, 0x16            ; next command
    0x3c, 0x01,                         // 53 cmp  al, 1
    0x74, 0x09,                         // 55 je   60 (eoi)
    0xe9, 0x49, 0x00,                   // 57 jmp  a3 (more)
    0x90,                               // 5a nop
    0xfb,                               // 5b sti                      ; 0: take interrupts
    0xf4,                               // 5c hlt
    0xfa,                               // 5d cli
    0xeb, 0xf1,                         // 5e jmp  51 (idle)
    // eoi:
    0x66, 0xb9, 0x0b, 0x08, 0x00, 0x00, // 60 mov  ecx, 0x80b          ; x2APIC EOI
    0x66, 0x31, 0xc0,                   // 66 xor  eax, eax
    0x66, 0x31, 0xd2,                   // 69 xor  edx, edx
    0x0f, 0x30,                         // 6c wrmsr
    0xe6, 0x17,                         // 6e out  0x17, al            ; idle EOI written
    0xeb, 0xdf,                         // 70 jmp  51 (idle)
    // ping:
    0xe6, 0x18,                         // 72 out  0x18, al            ; ping answered
    0xeb, 0xdb,                         // 74 jmp  51 (idle)
    // handler: bl = vector, registers pushed by the stub
    0x88, 0xd8,                         // 76 mov  al, bl
    0xe6, 0x11,                         // 78 out  0x11, al            ; handler entered
    0x66, 0x0f, 0xb6, 0xcb,             // 7a movzx ecx, bl
    0x66, 0xc1, 0xe9, 0x05,             // 7e shr  ecx, 5
    0x66, 0x81, 0xc1, 0x10, 0x08, 0x00, 0x00, // 82 add ecx, 0x810   ; ISR word of the vector
    0x0f, 0x32,                         // 89 rdmsr
    0x66, 0xe7, 0x15,                   // 8b out  0x15, eax           ; report it
    0x66, 0xb9, 0x0b, 0x08, 0x00, 0x00, // 8e mov  ecx, 0x80b          ; x2APIC EOI
    0x66, 0x31, 0xc0,                   // 94 xor  eax, eax
    0x66, 0x31, 0xd2,                   // 97 xor  edx, edx
    0x0f, 0x30,                         // 9a wrmsr
    0x88, 0xd8,                         // 9c mov  al, bl
    0xe6, 0x12,                         // 9e out  0x12, al            ; handler EOI written
    0x66, 0x61,                         // a0 popad
    0xcf,                               // a2 iret
    // more: the idle loop's other commands
    0x3c, 0x02,                         // a3 cmp  al, 2
    0x74, 0xcb,                         // a5 je   72 (ping)
    0x3c, 0x03,                         // a7 cmp  al, 3
    0x74, 0x03,                         // a9 je   ae (wrmsr)
    0xe9, 0xd2, 0x06,                   // ab jmp  780 (ext: commands 4-6, else halt)
    // wrmsr: operands from port 0x19
    0x66, 0xe5, 0x19,                   // ae in   eax, 0x19           ; the MSR
    0x66, 0x89, 0xc1,                   // b1 mov  ecx, eax
    0x66, 0xe5, 0x19,                   // b4 in   eax, 0x19           ; bits 63:32
    0x66, 0x89, 0xc2,                   // b7 mov  edx, eax
    0x66, 0xe5, 0x19,                   // ba in   eax, 0x19           ; bits 31:0
    0x0f, 0x30,                         // bd wrmsr
    0xe6, 0x1a,                         // bf out  0x1a, al            ; done
    0xeb, 0x8e,                         // c1 jmp  51 (idle)
];

/// Offset of the first handler stub from [`LOAD`].
pub const STUBS_OFFSET: usize = 0x100;
/// Size of one handler stub.
pub const STUB_SIZE: usize = 8;
/// Offset of the common handler from [`LOAD`].
const HANDLER_OFFSET: usize = 0x76;
/// Offset of [`GUEST_EXT`] from [`LOAD`]: right after the last stub.
pub const EXT_OFFSET: usize = STUBS_OFFSET + STUB_SIZE * (LAST_VECTOR - FIRST_VECTOR + 1) as usize;
/// Offset of the INTx handler (in [`GUEST_EXT`]) from [`LOAD`].
const INTX_HANDLER_OFFSET: usize = EXT_OFFSET + 0x40;
/// Guest-physical address of the I/O APIC window a [`Cmd::MmioWrite`] / [`Cmd::MmioRead`]
/// reaches: `fs = 0xffff`, `fs:[0x10 + offset]`, the first address above the guest's RAM,
/// so every access is a `KVM_EXIT_MMIO` (a real-mode guest cannot reach 0xFEC00000; the
/// 82093AA's registers are the same at any base).
pub const MMIO_WINDOW: u64 = MEM_SIZE as u64;

/// The idle loop's commands 4-6 and the INTx handler, at [`EXT_OFFSET`] (after the stubs,
/// where there is room; `more` jumps here for any command above 3). Assembled like
/// [`GUEST_CODE`] (gcc `.code16`, linked at 0x780, objdump).
#[rustfmt::skip]
pub const GUEST_EXT: &[u8] = &[
    // ext: al = the command
    0x3c, 0x04,                         // 780 cmp  al, 4
    0x74, 0x0b,                         // 782 je   78f (status)
    0x3c, 0x05,                         // 784 cmp  al, 5
    0x74, 0x0c,                         // 786 je   794 (mmio_write)
    0x3c, 0x06,                         // 788 cmp  al, 6
    0x74, 0x1f,                         // 78a je   7ab (mmio_read)
    0xe9, 0xcc, 0xf8,                   // 78c jmp  5b (halt)
    // status: a handler's device status read, from the idle loop
    0xe4, 0x1b,                         // 78f in   al, 0x1b
    0xe9, 0xbd, 0xf8,                   // 791 jmp  51 (idle)
    // mmio_write: offset, then value, from port 0x19
    0x66, 0xe5, 0x19,                   // 794 in   eax, 0x19          ; offset
    0x89, 0xc3,                         // 797 mov  bx, ax
    0x66, 0xe5, 0x19,                   // 799 in   eax, 0x19          ; value
    0xb9, 0xff, 0xff,                   // 79c mov  cx, 0xffff
    0x8e, 0xe1,                         // 79f mov  fs, cx             ; base 0xffff0
    0x64, 0x66, 0x89, 0x47, 0x10,       // 7a1 mov  fs:[bx+0x10], eax  ; GPA 0x100000 + offset
    0xe6, 0x1d,                         // 7a6 out  0x1d, al           ; done
    0xe9, 0xa6, 0xf8,                   // 7a8 jmp  51 (idle)
    // mmio_read: offset from port 0x19
    0x66, 0xe5, 0x19,                   // 7ab in   eax, 0x19          ; offset
    0x89, 0xc3,                         // 7ae mov  bx, ax
    0xb9, 0xff, 0xff,                   // 7b0 mov  cx, 0xffff
    0x8e, 0xe1,                         // 7b3 mov  fs, cx
    0x64, 0x66, 0x8b, 0x47, 0x10,       // 7b5 mov  eax, fs:[bx+0x10]
    0x66, 0xe7, 0x1c,                   // 7ba out  0x1c, eax          ; what the guest read
    0xe9, 0x91, 0xf8,                   // 7bd jmp  51 (idle)
    // intx: the INTx handler, bl = vector, registers pushed by the stub
    0x88, 0xda,                         // 7c0 mov  dl, bl
    0xb6, 0x10,                         // 7c2 mov  dh, 0x10
    0xec,                               // 7c4 in   al, dx             ; device status: port 0x1000 | vector
    0xe9, 0xc6, 0xf8,                   // 7c5 jmp  8e                 ; the common handler's EOI, out 0x12, iret
];

/// One handler stub (8 bytes at `STUBS_OFFSET + (vector - FIRST_VECTOR) * 8`):
/// `pushad (66 60); mov bl, vector (b3 vv); jmp near handler (e9 rel16); nop (90)`.
pub fn guest_stub(vector: u8) -> [u8; STUB_SIZE] {
    stub_to(vector, HANDLER_OFFSET)
}

/// The stub of `vector` when it runs the INTx handler ([`TestVm::use_intx_handler`]): as
/// [`guest_stub`], jumping to the INTx handler in [`GUEST_EXT`].
pub fn intx_stub(vector: u8) -> [u8; STUB_SIZE] {
    stub_to(vector, INTX_HANDLER_OFFSET)
}

fn stub_at(vector: u8) -> usize {
    assert!((FIRST_VECTOR..=LAST_VECTOR).contains(&vector));
    STUBS_OFFSET + usize::from(vector - FIRST_VECTOR) * STUB_SIZE
}

fn stub_to(vector: u8, handler: usize) -> [u8; STUB_SIZE] {
    let at = stub_at(vector);
    let rel = (handler as i32 - (at as i32 + 7)) as i16 as u16;
    let [lo, hi] = rel.to_le_bytes();
    [0x66, 0x60, 0xb3, vector, 0xe9, lo, hi, 0x90]
}

/// The whole guest image as loaded at [`LOAD`]: code, `hlt` padding, stubs, [`GUEST_EXT`].
pub fn guest_image() -> Vec<u8> {
    let mut img = GUEST_CODE.to_vec();
    img.resize(STUBS_OFFSET, 0xf4);
    for v in FIRST_VECTOR..=LAST_VECTOR {
        img.extend_from_slice(&guest_stub(v));
    }
    assert_eq!(img.len(), EXT_OFFSET);
    img.extend_from_slice(GUEST_EXT);
    img
}

/// What the idle loop does when it asks (`in 0x16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// `sti; hlt; cli`: take pending interrupts, or halt until one comes.
    Halt = 0,
    /// Write an x2APIC EOI, then `out 0x17`.
    Eoi = 1,
    /// `out 0x18`: one round trip through `KVM_RUN` with IF=0.
    Ping = 2,
    /// `wrmsr` (IF=0) with ECX, EDX, EAX read from port 0x19 ([`Vcpu::wrmsr`] queues
    /// them), then `out 0x1a`.
    Wrmsr = 3,
    /// `in al, 0x1b` (IF=0): a handler's device status read, stepped from the idle loop.
    Status = 4,
    /// A 32-bit store to [`MMIO_WINDOW`] + offset, offset and value read from port 0x19
    /// ([`Vcpu::mmio_write_cmd`] queues them), then `out 0x1d`.
    MmioWrite = 5,
    /// A 32-bit load from [`MMIO_WINDOW`] + offset (offset from port 0x19), then `out 0x1c`
    /// of the value read ([`Vcpu::mmio_read_cmd`]).
    MmioRead = 6,
}

// ---- availability -----------------------------------------------------------------------

/// `Ok` when `/dev/kvm` can run this harness (split irqchip, MSI routing, x2APIC in CPUID);
/// otherwise a one-line reason.
pub fn kvm_available() -> Result<(), String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("not Linux x86_64".into());
    }
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    for (cap, name) in [
        (Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
        (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
        (Cap::IrqInjectStatus, "KVM_CAP_IRQ_INJECT_STATUS"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(format!("/dev/kvm lacks {name}"));
        }
    }
    supported_cpuid(&kvm)?;
    kvm.create_vm()
        .map(drop)
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))
}

/// The skip check of every real-KVM test: `true` (after printing exactly one line,
/// `{test}: skipped: no usable /dev/kvm: {reason}`) when [`kvm_available`] fails, so the
/// test returns and passes; `false` when KVM is usable.
pub fn skip_without_kvm(test: &str) -> bool {
    match kvm_available() {
        Ok(()) => false,
        Err(reason) => {
            println!("{test}: skipped: no usable /dev/kvm: {reason}");
            true
        }
    }
}

/// `KVM_GET_SUPPORTED_CPUID`, checked to offer x2APIC.
pub fn supported_cpuid(kvm: &Kvm) -> Result<kvm_bindings::CpuId, String> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID failed: {e}"))?;
    let x2apic = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 1 && e.ecx & (1 << 21) != 0);
    if !x2apic {
        return Err("x2APIC not in KVM_GET_SUPPORTED_CPUID".into());
    }
    Ok(cpuid)
}

// ---- errors and the event trace ---------------------------------------------------------

/// A harness failure: an ioctl error, a protocol surprise, a timeout. Carries the trace.
#[derive(Debug, Clone)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(HarnessError(msg.into()))
}

fn ioctl_err(what: &str) -> impl FnOnce(vmm_sys_util::errno::Error) -> HarnessError + '_ {
    move |e| HarnessError(format!("{what}: {e}"))
}

/// A host action, as recorded in the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostOp {
    /// `KVM_SET_GSI_ROUTING` with the route table.
    SetRoutes,
    /// `KVM_IRQ_LINE_STATUS` (status of the call).
    IrqLine { gsi: u32, level: bool, status: i32 },
    /// `KVM_SIGNAL_MSI` (its return value).
    SignalMsi {
        address: u64,
        data: u32,
        result: i32,
    },
    /// `KVM_SET_LAPIC` on a vCPU (e.g. a planted ISR bit).
    SetLapic { vcpu: usize, what: String },
    /// `KVM_SET_IRQCHIP` (I/O APIC).
    SetIoapic,
    /// A batch of operations not traced one by one.
    Batch(String),
}

/// One thing that happened, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Host(HostOp),
    /// The guest reached "ready".
    Ready {
        vcpu: usize,
    },
    /// A guest handler was entered (`out 0x11`).
    Handler {
        vcpu: usize,
        vector: u8,
    },
    /// What the handler read in ISR for its own vector.
    HandlerIsr {
        vcpu: usize,
        vector: u8,
        in_service: bool,
    },
    /// The handler wrote its EOI (`out 0x12`).
    GuestEoi {
        vcpu: usize,
        vector: u8,
    },
    /// The idle loop wrote an EOI (`out 0x17`).
    IdleEoi {
        vcpu: usize,
    },
    /// A ping round trip (`out 0x18`).
    Ping {
        vcpu: usize,
    },
    /// The idle loop's `wrmsr` ran (`out 0x1a`).
    Wrmsr {
        vcpu: usize,
    },
    /// `KVM_EXIT_IOAPIC_EOI` (exit reason 26).
    EoiExit {
        vcpu: usize,
        vector: u8,
    },
    /// The guest halted with nothing to do.
    Idle {
        vcpu: usize,
    },
    /// A device status read: the INTx handler's for `vector`, or the idle loop's (`None`).
    DeviceStatus {
        vcpu: usize,
        vector: Option<u8>,
    },
    /// A guest store to [`MMIO_WINDOW`] + `offset` (`KVM_EXIT_MMIO`).
    MmioWrite {
        vcpu: usize,
        offset: u64,
        value: u32,
    },
    /// The store is done (`out 0x1d`).
    MmioWriteDone {
        vcpu: usize,
    },
    /// A guest load from [`MMIO_WINDOW`] + `offset` (`KVM_EXIT_MMIO`).
    MmioRead {
        vcpu: usize,
        offset: u64,
    },
    /// What that load returned to the guest, as the guest reported it (`out 0x1c`).
    GuestRead {
        vcpu: usize,
        value: u32,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Host(HostOp::SetRoutes) => write!(f, "[route]"),
            Event::Host(HostOp::IrqLine { gsi, level, .. }) => {
                write!(f, "[gsi{gsi}={}]", u8::from(*level))
            }
            Event::Host(HostOp::SignalMsi { address, data, .. }) => {
                write!(f, "[msi {:x}->{}]", data & 0xff, (address >> 12) & 0xff)
            }
            Event::Host(HostOp::SetLapic { vcpu, what }) => write!(f, "[v{vcpu} {what}]"),
            Event::Host(HostOp::SetIoapic) => write!(f, "[ioapic]"),
            Event::Host(HostOp::Batch(s)) => write!(f, "[{s}]"),
            Event::Ready { vcpu } => write!(f, "v{vcpu}:ready"),
            Event::Handler { vcpu, vector } => write!(f, "v{vcpu}:handler({vector:x})"),
            Event::HandlerIsr {
                vcpu,
                vector,
                in_service,
            } => write!(f, "v{vcpu}:isr({vector:x})={}", u8::from(*in_service)),
            Event::GuestEoi { vcpu, vector } => write!(f, "v{vcpu}:eoi({vector:x})"),
            Event::IdleEoi { vcpu } => write!(f, "v{vcpu}:idle-eoi"),
            Event::Ping { vcpu } => write!(f, "v{vcpu}:ping"),
            Event::Wrmsr { vcpu } => write!(f, "v{vcpu}:wrmsr"),
            Event::EoiExit { vcpu, vector } => write!(f, "v{vcpu}:EOI-EXIT({vector:x})"),
            Event::Idle { vcpu } => write!(f, "v{vcpu}:idle"),
            Event::DeviceStatus { vcpu, vector } => match vector {
                Some(v) => write!(f, "v{vcpu}:status({v:x})"),
                None => write!(f, "v{vcpu}:status"),
            },
            Event::MmioWrite {
                vcpu,
                offset,
                value,
            } => write!(f, "v{vcpu}:mmio[{offset:x}]={value:x}"),
            Event::MmioWriteDone { vcpu } => write!(f, "v{vcpu}:mmio-done"),
            Event::MmioRead { vcpu, offset } => write!(f, "v{vcpu}:mmio[{offset:x}]?"),
            Event::GuestRead { vcpu, value } => write!(f, "v{vcpu}:read={value:x}"),
        }
    }
}

#[derive(Default)]
struct TraceInner {
    events: Vec<Event>,
    paused: bool,
}

/// The event trace shared by a VM and its vCPUs (also across threads).
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<TraceInner>>);

impl Trace {
    pub fn push(&self, e: Event) {
        let mut t = self.0.lock().unwrap();
        if !t.paused {
            t.events.push(e);
        }
    }
    /// Stop (true) or resume (false) recording; counters keep counting.
    pub fn pause(&self, paused: bool) {
        self.0.lock().unwrap().paused = paused;
    }
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().events.clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().events.clear();
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// "[route] v0:ready v0:handler(40) v0:EOI-EXIT(40) ...", at most the last 200 events.
    pub fn render(&self) -> String {
        let t = self.0.lock().unwrap();
        let skip = t.events.len().saturating_sub(200);
        let mut s = if skip > 0 {
            format!("... ({skip} earlier) ")
        } else {
            String::new()
        };
        for e in &t.events[skip..] {
            s.push_str(&e.to_string());
            s.push(' ');
        }
        s
    }
}

// ---- bounded KVM_RUN: watchdog thread + signal + immediate_exit -------------------------

unsafe extern "C" {
    fn pthread_self() -> usize;
    fn pthread_kill(thread: usize, sig: c_int) -> c_int;
}

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running, null outside `KVM_RUN`.
    static IMMEDIATE_EXIT: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_sig: c_int, _info: *mut c_void, _ctx: *mut c_void) {
    // Only touches a const-initialized thread-local Cell: async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: set only while this thread owns the vCPU's mapped kvm_run.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

struct Watchdog {
    sig: c_int,
    slots: Mutex<Vec<(u64, usize, Instant)>>,
    cv: Condvar,
    next_id: AtomicU64,
}

fn watchdog() -> &'static Watchdog {
    static W: OnceLock<&'static Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let sig = vmm_sys_util::signal::SIGRTMIN() + 3;
        // SAFETY: both are C functions taking (int, pointer, pointer); siginfo_t is only
        // passed through as a pointer, which we never read.
        let handler: vmm_sys_util::signal::SignalHandler = unsafe {
            std::mem::transmute::<
                extern "C" fn(c_int, *mut c_void, *mut c_void),
                vmm_sys_util::signal::SignalHandler,
            >(on_kick)
        };
        vmm_sys_util::signal::register_signal_handler(sig, handler)
            .expect("register the vCPU kick signal handler");
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            sig,
            slots: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            next_id: AtomicU64::new(1),
        }));
        std::thread::Builder::new()
            .name("kvm-watchdog".into())
            .spawn(move || w.serve())
            .expect("spawn the KVM_RUN watchdog");
        w
    })
}

impl Watchdog {
    fn serve(&self) {
        let mut slots = self.slots.lock().unwrap();
        loop {
            let now = Instant::now();
            slots.retain(|&(_, thread, deadline)| {
                if deadline <= now {
                    // SAFETY: the thread is between arm() and disarm(), so it is alive.
                    unsafe { pthread_kill(thread, self.sig) };
                    false
                } else {
                    true
                }
            });
            slots = match slots.iter().map(|s| s.2).min() {
                Some(d) => self.cv.wait_timeout(slots, d - now).unwrap().0,
                None => self.cv.wait(slots).unwrap(),
            };
        }
    }
    fn arm(&self, after: Duration) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { pthread_self() };
        self.slots
            .lock()
            .unwrap()
            .push((id, me, Instant::now() + after));
        self.cv.notify_one();
        id
    }
    fn disarm(&self, id: u64) {
        self.slots.lock().unwrap().retain(|s| s.0 != id);
    }
}

// ---- LAPIC registers --------------------------------------------------------------------

/// A 256-bit LAPIC register (IRR, ISR, TMR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicReg {
    Isr = 0x100,
    Tmr = 0x180,
    Irr = 0x200,
}

fn apic_word(l: &kvm_lapic_state, reg: ApicReg, word: usize) -> u32 {
    let off = reg as usize + word * 16;
    let b: [u8; 4] = std::array::from_fn(|i| l.regs[off + i] as u8);
    u32::from_le_bytes(b)
}

fn set_apic_word(l: &mut kvm_lapic_state, reg: ApicReg, word: usize, val: u32) {
    let off = reg as usize + word * 16;
    for (i, b) in val.to_le_bytes().into_iter().enumerate() {
        l.regs[off + i] = b as _;
    }
}

/// IRR/ISR/TMR of one LAPIC as eight 32-bit words each (word n holds vectors 32n..32n+31).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicRegs {
    pub irr: [u32; 8],
    pub isr: [u32; 8],
    pub tmr: [u32; 8],
}

pub fn bit(words: &[u32; 8], vector: u8) -> bool {
    words[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
}

impl LapicRegs {
    /// IRR/ISR/TMR of a `KVM_GET_LAPIC` page.
    pub fn from_state(l: &kvm_lapic_state) -> Self {
        LapicRegs {
            irr: std::array::from_fn(|w| apic_word(l, ApicReg::Irr, w)),
            isr: std::array::from_fn(|w| apic_word(l, ApicReg::Isr, w)),
            tmr: std::array::from_fn(|w| apic_word(l, ApicReg::Tmr, w)),
        }
    }
    pub fn irr_has(&self, v: u8) -> bool {
        bit(&self.irr, v)
    }
    pub fn isr_has(&self, v: u8) -> bool {
        bit(&self.isr, v)
    }
    pub fn tmr_has(&self, v: u8) -> bool {
        bit(&self.tmr, v)
    }
}

// ---- vCPU -------------------------------------------------------------------------------

/// Where a run of the guest stopped (the guest events a caller waits for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Ready,
    Handler(u8),
    HandlerEoi(u8),
    IdleEoi,
    Ping,
    /// Halted (IF=1) with nothing pending for the idle period.
    Idle,
    /// The guest executed the `wrmsr` of a [`Cmd::Wrmsr`].
    Wrmsr,
    /// A `KVM_EXIT_IOAPIC_EOI` for this vector (only with [`Vcpu::stop_on_eoi_exit`]; it is
    /// counted and traced either way). A VMM feeds it to its I/O APIC before running on.
    EoiExit(u8),
    /// A device status read (the device model acts here): the INTx handler's for the
    /// vector ([`TestVm::use_intx_handler`]), or the idle loop's [`Cmd::Status`] (`None`).
    /// The guest reads 0.
    DeviceStatus(Option<u8>),
    /// The guest stores `value` at [`MMIO_WINDOW`] + `offset`.
    MmioWrite {
        offset: u64,
        value: u32,
    },
    /// The guest loads from [`MMIO_WINDOW`] + `offset`; it reads 0 unless
    /// [`Vcpu::reply_mmio_read`] answers before the next run.
    MmioRead {
        offset: u64,
    },
    /// The store of a [`Cmd::MmioWrite`] is done (`out 0x1d`).
    MmioWriteDone,
    /// The load of a [`Cmd::MmioRead`] is done; the value the guest got (`out 0x1c`).
    GuestRead(u32),
}

/// Per-call run limits.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// A halted guest counts as [`Stop::Idle`] after this long; `None`: keep waiting.
    pub idle_after: Option<Duration>,
    /// Give up (error) after this long without a stop.
    pub deadline: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            idle_after: Some(Duration::from_millis(25)),
            deadline: Duration::from_secs(3),
        }
    }
}

/// One vCPU and its bookkeeping. `Send`: it may run in its own thread.
pub struct Vcpu {
    pub index: usize,
    fd: VcpuFd,
    /// One-shot reply to the idle loop's next question; `Halt` when `None`.
    pub cmd: Option<Cmd>,
    /// What the guest's next `in eax, 0x19` reads, first first.
    pub wrmsr_args: std::collections::VecDeque<u32>,
    /// `KVM_EXIT_IOAPIC_EOI` count per vector.
    pub eoi_exits: [u32; 256],
    /// The ISR word the last handler read (vector, word).
    pub last_guest_isr: Option<(u8, u32)>,
    /// Handlers that saw their own vector in ISR.
    pub handlers_saw_own_isr: u32,
    /// Every `KVM_RUN` return (exits and interruptions).
    pub run_returns: Arc<AtomicU64>,
    pub limits: RunLimits,
    /// Return [`Stop::EoiExit`] for each `KVM_EXIT_IOAPIC_EOI` (default: handled silently).
    pub stop_on_eoi_exit: bool,
    current_handler: Option<u8>,
    /// The last stop was [`Stop::Idle`]: the guest sits in `hlt` and only asks for its next
    /// command after an interrupt, or after [`Vcpu::wake`].
    idle: bool,
    /// The last exit was an MMIO load that [`Vcpu::reply_mmio_read`] may still answer.
    mmio_read_pending: bool,
    trace: Trace,
}

impl Vcpu {
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn fail<T>(&self, msg: impl fmt::Display) -> Result<T> {
        err(format!(
            "vcpu{}: {msg}\n  trace: {}",
            self.index,
            self.trace.render()
        ))
    }

    /// One bounded `KVM_RUN` and the bookkeeping of its exit.
    fn run_once(&mut self, slot: Duration) -> Result<Step> {
        let w = watchdog();
        let imm: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        IMMEDIATE_EXIT.with(|c| c.set(imm));
        let id = w.arm(slot);
        let cmd = &mut self.cmd;
        let args = &mut self.wrmsr_args;
        self.mmio_read_pending = false;
        let res = match self.fd.run() {
            // EINTR (watchdog signal) or EAGAIN: interrupted, nothing happened.
            Err(e) if e.errno() == 4 || e.errno() == 11 => Ok(Exit::Interrupted),
            Err(e) => Err(format!("KVM_RUN: {e}")),
            Ok(VcpuExit::IoapicEoi(v)) => Ok(Exit::Eoi(v)),
            Ok(VcpuExit::IoIn(port::CMD, data)) => {
                data[0] = cmd.take().unwrap_or(Cmd::Halt) as u8;
                Ok(Exit::Quiet)
            }
            Ok(VcpuExit::IoIn(port::WRMSR_ARG, data)) => match args.pop_front() {
                Some(v) => {
                    let b = v.to_le_bytes();
                    let n = data.len().min(4);
                    data[..n].copy_from_slice(&b[..n]);
                    Ok(Exit::Quiet)
                }
                None => Err("the guest read a wrmsr operand nobody queued".into()),
            },
            Ok(VcpuExit::IoIn(p, data)) if p == port::STATUS || p & !0xff == port::INTX_STATUS => {
                data.fill(0);
                Ok(Exit::Status((p != port::STATUS).then_some(p as u8)))
            }
            Ok(VcpuExit::IoOut(port::GUEST_ISR, data)) => Ok(Exit::GuestIsr(le32(data))),
            Ok(VcpuExit::IoOut(port::MMIO_READ_VALUE, data)) => Ok(Exit::GuestRead(le32(data))),
            Ok(VcpuExit::MmioWrite(addr, data)) if addr >= MMIO_WINDOW => {
                Ok(Exit::MmioWrite(addr - MMIO_WINDOW, le32(data)))
            }
            Ok(VcpuExit::MmioRead(addr, data)) if addr >= MMIO_WINDOW => {
                data.fill(0);
                Ok(Exit::MmioRead(addr - MMIO_WINDOW))
            }
            Ok(VcpuExit::IoOut(p, data)) => Ok(Exit::Out(p, data.first().copied().unwrap_or(0))),
            Ok(other) => Err(format!("unexpected exit {other:?}")),
        };
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
        w.disarm(id);
        self.fd.set_kvm_immediate_exit(0);
        self.run_returns.fetch_add(1, Ordering::Relaxed);
        let vcpu = self.index;
        match res {
            Err(m) => self.fail(m),
            Ok(Exit::Interrupted) => Ok(Step::Interrupted),
            Ok(Exit::Quiet) => Ok(Step::Continue),
            Ok(Exit::Eoi(v)) => {
                self.eoi_exits[usize::from(v)] += 1;
                self.trace.push(Event::EoiExit { vcpu, vector: v });
                if self.stop_on_eoi_exit {
                    Ok(Step::Stop(Stop::EoiExit(v)))
                } else {
                    Ok(Step::Continue)
                }
            }
            Ok(Exit::Status(vector)) => {
                self.trace.push(Event::DeviceStatus { vcpu, vector });
                Ok(Step::Stop(Stop::DeviceStatus(vector)))
            }
            Ok(Exit::MmioWrite(offset, value)) => {
                self.trace.push(Event::MmioWrite {
                    vcpu,
                    offset,
                    value,
                });
                Ok(Step::Stop(Stop::MmioWrite { offset, value }))
            }
            Ok(Exit::MmioRead(offset)) => {
                self.mmio_read_pending = true;
                self.trace.push(Event::MmioRead { vcpu, offset });
                Ok(Step::Stop(Stop::MmioRead { offset }))
            }
            Ok(Exit::GuestRead(value)) => {
                self.trace.push(Event::GuestRead { vcpu, value });
                Ok(Step::Stop(Stop::GuestRead(value)))
            }
            Ok(Exit::GuestIsr(word)) => {
                if let Some(v) = self.current_handler {
                    let in_service = word & (1 << (v % 32)) != 0;
                    self.last_guest_isr = Some((v, word));
                    self.handlers_saw_own_isr += u32::from(in_service);
                    self.trace.push(Event::HandlerIsr {
                        vcpu,
                        vector: v,
                        in_service,
                    });
                }
                Ok(Step::Continue)
            }
            Ok(Exit::Out(p, d)) => {
                let (stop, ev) = match p {
                    port::READY => (Stop::Ready, Event::Ready { vcpu }),
                    port::HANDLER => {
                        self.current_handler = Some(d);
                        (Stop::Handler(d), Event::Handler { vcpu, vector: d })
                    }
                    port::HANDLER_EOI => {
                        self.current_handler = None;
                        (Stop::HandlerEoi(d), Event::GuestEoi { vcpu, vector: d })
                    }
                    port::IDLE_EOI => (Stop::IdleEoi, Event::IdleEoi { vcpu }),
                    port::PING => (Stop::Ping, Event::Ping { vcpu }),
                    port::WRMSR_DONE => (Stop::Wrmsr, Event::Wrmsr { vcpu }),
                    port::MMIO_WRITE_DONE => (Stop::MmioWriteDone, Event::MmioWriteDone { vcpu }),
                    _ => return self.fail(format_args!("unexpected out {p:#x}")),
                };
                self.trace.push(ev);
                Ok(Step::Stop(stop))
            }
        }
    }

    /// Is the vCPU halted (`KVM_MP_STATE_HALTED`)?
    pub fn is_halted(&self) -> Result<bool> {
        let mp = self
            .fd
            .get_mp_state()
            .map_err(ioctl_err("KVM_GET_MP_STATE"))?;
        Ok(mp.mp_state == KVM_MP_STATE_HALTED)
    }

    /// The loop behind [`Vcpu::next_stop_with`].
    fn next_stop_untracked(&mut self, limits: RunLimits) -> Result<Stop> {
        let start = Instant::now();
        loop {
            let left = limits.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                return self.fail(format_args!("no guest event within {:?}", limits.deadline));
            }
            let slot = limits.idle_after.map_or(left, |i| i.min(left));
            match self.run_once(slot)? {
                Step::Stop(s) => return Ok(s),
                Step::Continue => {}
                // Interrupted: idle only if the guest really sits in hlt; a vCPU that was
                // still emulating when the watchdog fired just runs on.
                Step::Interrupted => {
                    if limits.idle_after.is_some() && self.is_halted()? {
                        self.trace.push(Event::Idle { vcpu: self.index });
                        return Ok(Stop::Idle);
                    }
                }
            }
        }
    }

    /// Run until the guest does an I/O the caller cares about, or (with
    /// `limits.idle_after`) until it has been halted that long. EOI exits, the idle loop's
    /// question and the handler's ISR report are handled on the way.
    pub fn next_stop_with(&mut self, limits: RunLimits) -> Result<Stop> {
        let s = self.next_stop_untracked(limits)?;
        self.idle = s == Stop::Idle;
        Ok(s)
    }

    /// Get an idle (halted) guest back to its command loop without an interrupt:
    /// `KVM_SET_MP_STATE(RUNNABLE)` resumes it after its `hlt` (then `cli`, `in 0x16`).
    /// No-op unless the last stop was [`Stop::Idle`]; pending interrupts still win, as
    /// they would on a real wake-up (IF is 1 until the `cli`).
    pub fn wake(&mut self) -> Result<()> {
        if self.idle && self.is_halted()? {
            self.fd
                .set_mp_state(kvm_mp_state {
                    mp_state: KVM_MP_STATE_RUNNABLE,
                })
                .map_err(ioctl_err("KVM_SET_MP_STATE"))?;
        }
        self.idle = false;
        Ok(())
    }

    /// Queue the idle loop's next command, waking an idle guest so it asks.
    pub fn command(&mut self, cmd: Cmd) -> Result<()> {
        self.wake()?;
        self.cmd = Some(cmd);
        Ok(())
    }

    /// [`Vcpu::next_stop_with`] with this vCPU's default limits.
    pub fn next_stop(&mut self) -> Result<Stop> {
        self.next_stop_with(self.limits)
    }

    /// The next stop must be `want`.
    pub fn expect(&mut self, want: Stop) -> Result<()> {
        let got = self.next_stop()?;
        if got != want {
            return self.fail(format_args!("expected {want:?}, got {got:?}"));
        }
        Ok(())
    }

    /// An interrupt for `vector` is pending: run its handler to its EOI write.
    pub fn handle(&mut self, vector: u8) -> Result<()> {
        self.expect(Stop::Handler(vector))?;
        self.expect(Stop::HandlerEoi(vector))
    }

    /// One round trip through `KVM_RUN` from the idle loop with IF=0, so KVM services
    /// requests still pending (quirk 2).
    pub fn ping(&mut self) -> Result<()> {
        self.command(Cmd::Ping)?;
        self.expect(Stop::Ping)
    }

    /// Have the idle loop execute `wrmsr` of `value` to `msr` (with IF=0), e.g. the x2APIC
    /// ICR (0x830) or SELF IPI (0x83F).
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> Result<()> {
        self.wrmsr_args.clear();
        self.wrmsr_args
            .extend([msr, (value >> 32) as u32, value as u32]);
        self.command(Cmd::Wrmsr)?;
        self.expect(Stop::Wrmsr)
    }

    /// Have the idle loop write one EOI (nothing delivered), then [`Vcpu::ping`].
    pub fn guest_eoi(&mut self) -> Result<()> {
        self.guest_eoi_no_ping()?;
        self.ping()
    }

    /// Have the idle loop write one EOI, without the ping.
    pub fn guest_eoi_no_ping(&mut self) -> Result<()> {
        self.command(Cmd::Eoi)?;
        self.expect(Stop::IdleEoi)
    }

    /// Have the idle loop read a device's status ([`Cmd::Status`]); the run stops at
    /// [`Stop::DeviceStatus`]`(None)`.
    pub fn status_cmd(&mut self) -> Result<()> {
        self.command(Cmd::Status)
    }

    /// Have the idle loop store `value` at [`MMIO_WINDOW`] + `offset` ([`Cmd::MmioWrite`]);
    /// the run stops at [`Stop::MmioWrite`], then [`Stop::MmioWriteDone`].
    pub fn mmio_write_cmd(&mut self, offset: u32, value: u32) -> Result<()> {
        self.wrmsr_args.clear();
        self.wrmsr_args.extend([offset, value]);
        self.command(Cmd::MmioWrite)
    }

    /// Have the idle loop load from [`MMIO_WINDOW`] + `offset` ([`Cmd::MmioRead`]); the run
    /// stops at [`Stop::MmioRead`] (answer with [`Vcpu::reply_mmio_read`]), then
    /// [`Stop::GuestRead`] with what the guest got.
    pub fn mmio_read_cmd(&mut self, offset: u32) -> Result<()> {
        self.wrmsr_args.clear();
        self.wrmsr_args.push_back(offset);
        self.command(Cmd::MmioRead)
    }

    /// The value the guest's pending MMIO load ([`Stop::MmioRead`]) reads; KVM completes
    /// the load from `kvm_run.mmio.data` at the next `KVM_RUN`.
    pub fn reply_mmio_read(&mut self, value: u32) -> Result<()> {
        if !self.mmio_read_pending {
            return self.fail("reply_mmio_read without a pending MMIO load");
        }
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_MMIO (`mmio_read_pending`), so `mmio` is the
        // member of the exit union in use; it is plain data.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let n = (mmio.len as usize).min(4);
        mmio.data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
        Ok(())
    }

    /// The guest on this vCPU takes an interrupt the way its LAPIC would deliver one, done
    /// by the host while the guest sits at IF=0 (quirk 1: a delivered interrupt cannot be
    /// held in service here): the highest IRR vector, if its priority class is above the
    /// processor priority (TPR, highest ISR), moves from IRR to ISR (TMR as KVM set it at
    /// acceptance) with `KVM_SET_LAPIC`. Returns it, or `None` when nothing is deliverable.
    pub fn inta(&self) -> Result<Option<u8>> {
        let l = self.get_lapic()?;
        let regs = LapicRegs::from_state(&l);
        let highest = |w: &[u32; 8]| (0..=255u8).rev().find(|&v| bit(w, v));
        let Some(v) = highest(&regs.irr) else {
            return Ok(None);
        };
        let tpr = l.regs[0x80] as u8;
        let ppr_class = highest(&regs.isr).map_or(0, |s| s >> 4).max(tpr >> 4);
        if v >> 4 <= ppr_class {
            return Ok(None);
        }
        self.set_lapic_bits(&[(ApicReg::Irr, v, false), (ApicReg::Isr, v, true)])?;
        Ok(Some(v))
    }

    /// The guest must go idle with no further guest event (EOI exits still counted).
    pub fn settle(&mut self) -> Result<()> {
        self.expect(Stop::Idle)
    }

    pub fn eoi_exits(&self, vector: u8) -> u32 {
        self.eoi_exits[usize::from(vector)]
    }

    pub fn total_eoi_exits(&self) -> u32 {
        self.eoi_exits.iter().sum()
    }

    // -- LAPIC state

    pub fn get_lapic(&self) -> Result<kvm_lapic_state> {
        self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))
    }

    pub fn set_lapic(&self, l: &kvm_lapic_state, what: &str) -> Result<()> {
        self.fd.set_lapic(l).map_err(ioctl_err("KVM_SET_LAPIC"))?;
        self.trace.push(Event::Host(HostOp::SetLapic {
            vcpu: self.index,
            what: what.into(),
        }));
        Ok(())
    }

    /// IRR/ISR/TMR read back with `KVM_GET_LAPIC`.
    pub fn get_lapic_regs(&self) -> Result<LapicRegs> {
        Ok(LapicRegs::from_state(&self.get_lapic()?))
    }

    /// Set or clear one bit of IRR/ISR/TMR with `KVM_GET_LAPIC`/`KVM_SET_LAPIC` (which
    /// itself recalculates the APIC map, so KVM re-scans).
    pub fn set_lapic_bits(&self, bits: &[(ApicReg, u8, bool)]) -> Result<()> {
        let mut l = self.get_lapic()?;
        let mut what = String::new();
        for &(reg, v, on) in bits {
            let w = usize::from(v / 32);
            let mut word = apic_word(&l, reg, w);
            if on {
                word |= 1 << (v % 32);
            } else {
                word &= !(1 << (v % 32));
            }
            set_apic_word(&mut l, reg, w, word);
            what.push_str(&format!("{}{reg:?} {v:x} ", if on { "+" } else { "-" }));
        }
        self.set_lapic(&l, what.trim_end())
    }

    /// Put `vector` in service as a delivered level interrupt would be: ISR and TMR set.
    /// Do it while the guest sits at IF=0 (stopped in the idle loop or a handler).
    pub fn plant_in_service(&self, vector: u8) -> Result<()> {
        self.set_lapic_bits(&[(ApicReg::Isr, vector, true), (ApicReg::Tmr, vector, true)])
    }
}

enum Exit {
    Interrupted,
    Quiet,
    Eoi(u8),
    GuestIsr(u32),
    Status(Option<u8>),
    MmioWrite(u64, u32),
    MmioRead(u64),
    GuestRead(u32),
    Out(u16, u8),
}

/// Up to four bytes of an exit's data, little-endian.
fn le32(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

enum Step {
    Interrupted,
    Continue,
    Stop(Stop),
}

// ---- the VM -----------------------------------------------------------------------------

/// Which interrupt controller KVM emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqChipMode {
    /// `KVM_CAP_SPLIT_IRQCHIP` (24 pins): LAPIC in the kernel, I/O APIC in userspace; EOIs
    /// of routed level vectors exit with `KVM_EXIT_IOAPIC_EOI`.
    Split,
    /// `KVM_CREATE_IRQCHIP`: PIC, I/O APIC and LAPIC in the kernel. The default routes of
    /// GSIs 0-23 go to the I/O APIC pins only (the PIC is left out).
    InKernel,
}

/// A GSI route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An MSI (`KVM_IRQ_ROUTING_MSI`).
    Msi { address: u64, data: u32 },
    /// An in-kernel I/O APIC pin (`KVM_IRQ_ROUTING_IRQCHIP`, in-kernel irqchip only).
    IoapicPin(u32),
}

/// MSI address for physical destination APIC id `dest`.
pub fn msi_address(dest: u8) -> u64 {
    0xFEE0_0000 | (u64::from(dest) << 12)
}

/// MSI data: fixed delivery, `vector`, trigger mode bit 15 = `level` (as kvm-oracle and
/// a userspace I/O APIC encode it; bit 14 stays 0, KVM forces the level to 1 anyway).
pub fn msi_data(vector: u8, level: bool) -> u32 {
    u32::from(vector) | if level { 1 << 15 } else { 0 }
}

/// The in-kernel I/O APIC as read by `KVM_GET_IRQCHIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicRegisters {
    pub redirtbl: [u64; 24],
    pub irr: u32,
    pub id: u32,
    pub ioregsel: u32,
    pub base_address: u64,
}

/// The host side of a VM: route table, injection, in-kernel I/O APIC access.
pub struct Vm {
    pub fd: VmFd,
    pub mode: IrqChipMode,
    /// The route table pushed by [`Vm::push_routes`] (GSI -> route).
    pub routes: BTreeMap<u32, Route>,
    pub trace: Trace,
}

impl Vm {
    /// Add or change a route in the table (not yet installed).
    pub fn set_route(&mut self, gsi: u32, r: Route) {
        self.routes.insert(gsi, r);
    }

    pub fn remove_route(&mut self, gsi: u32) {
        self.routes.remove(&gsi);
    }

    /// Route `gsi` to an MSI for `vector` on APIC id `dest` (not yet installed).
    pub fn route_msi(&mut self, gsi: u32, dest: u8, vector: u8, level: bool) {
        self.set_route(
            gsi,
            Route::Msi {
                address: msi_address(dest),
                data: msi_data(vector, level),
            },
        );
    }

    /// Install the table with `KVM_SET_GSI_ROUTING`.
    pub fn push_routes(&mut self) -> Result<()> {
        self.push_routes_quiet()?;
        self.trace.push(Event::Host(HostOp::SetRoutes));
        Ok(())
    }

    /// [`Vm::push_routes`] without a trace event (for loops).
    pub fn push_routes_quiet(&self) -> Result<()> {
        let entries: Vec<kvm_irq_routing_entry> = self
            .routes
            .iter()
            .map(|(&gsi, r)| {
                let mut e = kvm_irq_routing_entry {
                    gsi,
                    ..Default::default()
                };
                match *r {
                    Route::Msi { address, data } => {
                        e.type_ = KVM_IRQ_ROUTING_MSI;
                        e.u.msi.address_lo = address as u32;
                        e.u.msi.address_hi = (address >> 32) as u32;
                        e.u.msi.data = data;
                    }
                    Route::IoapicPin(pin) => {
                        e.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                        e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
                        e.u.irqchip.pin = pin;
                    }
                }
                e
            })
            .collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| HarnessError(format!("routing table: {e:?}")))?;
        self.fd
            .set_gsi_routing(&table)
            .map_err(ioctl_err("KVM_SET_GSI_ROUTING"))
    }

    /// `KVM_IRQ_LINE_STATUS`; returns the status (for an MSI route: 1 delivered, 0 the
    /// destination does not exist; negative: not delivered).
    pub fn irq_line(&self, gsi: u32, level: bool) -> Result<i32> {
        let mut l = kvm_irq_level {
            level: u32::from(level),
            ..Default::default()
        };
        l.__bindgen_anon_1.irq = gsi;
        // SAFETY: a VM fd, the ioctl's own argument type, return value checked.
        let r = unsafe { ioctl_with_mut_ref(&self.fd, KVM_IRQ_LINE_STATUS(), &mut l) };
        if r < 0 {
            return err(format!(
                "KVM_IRQ_LINE_STATUS(gsi {gsi}): {}",
                vmm_sys_util::errno::Error::last()
            ));
        }
        // SAFETY: the kernel writes `status` back into the union.
        let status = unsafe { l.__bindgen_anon_1.status };
        self.trace
            .push(Event::Host(HostOp::IrqLine { gsi, level, status }));
        Ok(status)
    }

    /// Assert then deassert `gsi`; returns the status of the assert.
    pub fn pulse(&self, gsi: u32) -> Result<i32> {
        let st = self.irq_line(gsi, true)?;
        self.irq_line(gsi, false)?;
        Ok(st)
    }

    /// `KVM_SIGNAL_MSI`, as a userspace I/O APIC sends it; returns the ioctl's value
    /// (>0 delivered, 0 blocked by the guest).
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<i32> {
        let m = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        let result = self.fd.signal_msi(m).map_err(ioctl_err("KVM_SIGNAL_MSI"))?;
        self.trace.push(Event::Host(HostOp::SignalMsi {
            address,
            data,
            result,
        }));
        Ok(result)
    }

    /// An MSI for `vector` to APIC id `dest`.
    pub fn msi(&self, dest: u8, vector: u8, level: bool) -> Result<i32> {
        self.signal_msi(msi_address(dest), msi_data(vector, level))
    }

    fn irqchip_ioapic_raw(&self) -> Result<kvm_irqchip> {
        if self.mode != IrqChipMode::InKernel {
            return err("the I/O APIC is not in the kernel (split irqchip)");
        }
        let mut chip = kvm_irqchip {
            chip_id: KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        };
        self.fd
            .get_irqchip(&mut chip)
            .map_err(ioctl_err("KVM_GET_IRQCHIP"))?;
        Ok(chip)
    }

    /// The in-kernel I/O APIC (`KVM_GET_IRQCHIP`): 24 redirection entries and IRR.
    pub fn get_irqchip_ioapic(&self) -> Result<IoapicRegisters> {
        let chip = self.irqchip_ioapic_raw()?;
        // SAFETY: chip_id IOAPIC selects the `ioapic` member.
        let io = unsafe { chip.chip.ioapic };
        Ok(IoapicRegisters {
            // SAFETY: every redirection entry is plain 64 bits.
            redirtbl: std::array::from_fn(|i| unsafe { io.redirtbl[i].bits }),
            irr: io.irr,
            id: io.id,
            ioregsel: io.ioregsel,
            base_address: io.base_address,
        })
    }

    /// Write one redirection entry of the in-kernel I/O APIC (`KVM_SET_IRQCHIP`).
    pub fn set_ioapic_redirection(&self, pin: usize, entry: u64) -> Result<()> {
        let mut chip = self.irqchip_ioapic_raw()?;
        // SAFETY: chip_id IOAPIC selects the `ioapic` member; entries are plain u64.
        unsafe { chip.chip.ioapic.redirtbl[pin].bits = entry };
        self.fd
            .set_irqchip(&chip)
            .map_err(ioctl_err("KVM_SET_IRQCHIP"))?;
        self.trace.push(Event::Host(HostOp::SetIoapic));
        Ok(())
    }
}

/// Page-aligned guest RAM, freed after the VM (field order in [`TestVm`]).
struct GuestMem {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: plain memory owned by this struct.
unsafe impl Send for GuestMem {}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: allocated in TestVm::new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// A VM with its vCPUs, built by [`TestVm::new`]. The fields are public so a test can run
/// a vCPU in a scoped thread (`&mut tvm.vcpus[0]`) while it works on `&mut tvm.vm`.
pub struct TestVm {
    pub vcpus: Vec<Vcpu>,
    pub vm: Vm,
    _kvm: Kvm,
    _mem: GuestMem,
}

impl TestVm {
    /// A fresh VM: irqchip per `mode`, 1 MiB of RAM with the guest at 0x1000, `n_vcpus`
    /// (1 or 2; APIC ids 0 and 1) with the supported CPUID, entered at CS=0, IP=0x1000.
    /// For the in-kernel irqchip, GSIs 0-23 are routed to I/O APIC pins 0-23.
    pub fn new(mode: IrqChipMode, n_vcpus: usize) -> Result<TestVm> {
        Self::with_x2apic_api(mode, n_vcpus, 0)
    }

    /// As [`TestVm::new`], with `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)` of `flags` after the
    /// irqchip is created and before any vCPU (nothing when `flags` is 0).
    pub fn with_x2apic_api(mode: IrqChipMode, n_vcpus: usize, flags: u64) -> Result<TestVm> {
        if !(1..=2).contains(&n_vcpus) {
            return err("1 or 2 vCPUs");
        }
        let kvm = Kvm::new().map_err(ioctl_err("open /dev/kvm"))?;
        let cpuid = supported_cpuid(&kvm).map_err(HarnessError)?;
        let fd = kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        let mut routes = BTreeMap::new();
        match mode {
            IrqChipMode::Split => {
                let mut cap = kvm_enable_cap {
                    cap: KVM_CAP_SPLIT_IRQCHIP,
                    ..Default::default()
                };
                cap.args[0] = u64::from(NR_IOAPIC_PINS);
                fd.enable_cap(&cap)
                    .map_err(ioctl_err("KVM_ENABLE_CAP(SPLIT_IRQCHIP)"))?;
            }
            IrqChipMode::InKernel => {
                fd.create_irq_chip()
                    .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;
                for pin in 0..NR_IOAPIC_PINS {
                    routes.insert(pin, Route::IoapicPin(pin));
                }
            }
        }

        if flags != 0 {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_X2APIC_API,
                ..Default::default()
            };
            cap.args[0] = flags;
            fd.enable_cap(&cap)
                .map_err(ioctl_err("KVM_ENABLE_CAP(X2APIC_API)"))?;
        }

        let layout = std::alloc::Layout::from_size_align(MEM_SIZE, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return err("out of memory");
        }
        let mem = GuestMem { ptr, layout };
        let img = guest_image();
        // SAFETY: the image fits well inside the 1 MiB allocation.
        unsafe { std::ptr::copy_nonoverlapping(img.as_ptr(), ptr.add(LOAD as usize), img.len()) };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: ptr as u64,
        };
        // SAFETY: the memory outlives the VM (TestVm drops vcpus and vm before _mem).
        unsafe { fd.set_user_memory_region(region) }
            .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION"))?;

        let trace = Trace::default();
        let mut vcpus = Vec::new();
        for id in 0..n_vcpus {
            let vfd = fd
                .create_vcpu(id as u64)
                .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
            vfd.set_cpuid2(&cpuid)
                .map_err(ioctl_err("KVM_SET_CPUID2"))?;
            let mut s = vfd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
            for seg in [
                &mut s.cs, &mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs,
            ] {
                seg.base = 0;
                seg.selector = 0;
            }
            vfd.set_sregs(&s).map_err(ioctl_err("KVM_SET_SREGS"))?;
            let r = kvm_regs {
                rip: LOAD,
                rflags: 2,
                ..Default::default()
            };
            vfd.set_regs(&r).map_err(ioctl_err("KVM_SET_REGS"))?;
            if id > 0 {
                // With an in-kernel LAPIC, APs wait for INIT/SIPI.
                vfd.set_mp_state(kvm_mp_state {
                    mp_state: KVM_MP_STATE_RUNNABLE,
                })
                .map_err(ioctl_err("KVM_SET_MP_STATE"))?;
            }
            vcpus.push(Vcpu {
                index: id,
                fd: vfd,
                cmd: None,
                wrmsr_args: std::collections::VecDeque::new(),
                eoi_exits: [0; 256],
                last_guest_isr: None,
                handlers_saw_own_isr: 0,
                run_returns: Arc::new(AtomicU64::new(0)),
                limits: RunLimits::default(),
                stop_on_eoi_exit: false,
                current_handler: None,
                idle: false,
                mmio_read_pending: false,
                trace: trace.clone(),
            });
        }
        let vm = Vm {
            fd,
            mode,
            routes,
            trace,
        };
        if mode == IrqChipMode::InKernel {
            vm.push_routes_quiet()?;
        }
        Ok(TestVm {
            vcpus,
            vm,
            _kvm: kvm,
            _mem: mem,
        })
    }

    pub fn trace(&self) -> &Trace {
        &self.vm.trace
    }

    /// From now on `vector` runs the INTx handler: its stub jumps to the device status read
    /// (`in al, dx` at port [`port::INTX_STATUS`]` | vector`: [`Stop::DeviceStatus`]`(Some)`),
    /// then the common handler's EOI write, `out 0x12` and `iret`. No `out 0x11`: the
    /// status read is the handler's first exit, so on this host (quirk 1) the EOI exit of
    /// the delivery comes after it. Write it while every vCPU is stopped.
    pub fn use_intx_handler(&mut self, vector: u8) {
        let at = LOAD as usize + stub_at(vector);
        let stub = intx_stub(vector);
        // SAFETY: inside the 1 MiB allocation; no vCPU runs (they are driven from this
        // thread, or joined, while `&mut self` is held).
        unsafe { std::ptr::copy_nonoverlapping(stub.as_ptr(), self._mem.ptr.add(at), STUB_SIZE) };
    }

    pub fn vcpu(&mut self, i: usize) -> &mut Vcpu {
        &mut self.vcpus[i]
    }

    /// Run every vCPU to "ready" (the last one first, like the C oracle).
    pub fn all_ready(&mut self) -> Result<()> {
        for v in self.vcpus.iter_mut().rev() {
            v.expect(Stop::Ready)?;
        }
        Ok(())
    }

    /// `n` edge MSIs of `vector` to vCPU `i`, each handled; returns the EOI exits they
    /// caused for `vector`. Not traced event by event.
    pub fn storm(&mut self, i: usize, vector: u8, n: u32) -> Result<u32> {
        let before = self.vcpus[i].eoi_exits(vector);
        self.vm.trace.push(Event::Host(HostOp::Batch(format!(
            "{n} x edge msi {vector:x}->{i}"
        ))));
        self.vm.trace.pause(true);
        let res = (|| {
            for _ in 0..n {
                self.vm.msi(i as u8, vector, false)?;
                self.vcpus[i].handle(vector)?;
            }
            Ok(())
        })();
        self.vm.trace.pause(false);
        res?;
        Ok(self.vcpus[i].eoi_exits(vector) - before)
    }

    /// Fail with `msg`, the expected and observed values, and the trace, unless equal.
    pub fn check(&self, what: &str, got: u32, want: u32) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            err(format!(
                "{what}: observed {got}, expected {want}\n  trace: {}",
                self.vm.trace.render()
            ))
        }
    }
}
