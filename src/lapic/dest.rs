//! Destination matching (SDM Vol. 3, "Determining IPI Destination") and
//! lowest-priority arbitration.
//!
//! The rules are documented on [`LocalApic::matches`].

use super::{ApicMode, LocalApic};
use crate::irqchip::Arbitration;
use crate::types::{Destination, DestinationMode, InterruptMessage};

/// The xAPIC broadcast destination.
pub(crate) const XAPIC_BROADCAST: u32 = 0xFF;
/// The x2APIC broadcast destination.
pub(crate) const X2APIC_BROADCAST: u32 = 0xFFFF_FFFF;

/// DFR value of the flat model (bits 31:28 = `1111`).
pub(crate) const DFR_FLAT: u32 = 0xFFFF_FFFF;
/// DFR value of the cluster model (bits 31:28 = `0000`).
pub(crate) const DFR_CLUSTER: u32 = 0x0FFF_FFFF;

/// The read-only x2APIC LDR derived from an x2APIC ID (SDM "Logical
/// Destination Mode in x2APIC Mode"): cluster `id >> 4` in bits 31:16 and bit
/// `id & 0xF` of bits 15:0.
#[inline]
pub(crate) const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xF))
}

impl LocalApic {
    /// Whether an I/O APIC or MSI message addressed to `dest` reaches this APIC
    /// (no destination shorthand), with KVM's default x2APIC broadcast quirk.
    ///
    /// Matching follows Linux KVM's `kvm_apic_match_dest` for messages that come
    /// from an I/O APIC or an MSI (no source APIC, no shorthand):
    ///
    /// * **Broadcast** is the all-ones destination *of the target's mode*: `0xFF` for
    ///   an xAPIC-mode APIC, `0xFFFF_FFFF` for an x2APIC-mode APIC. An xAPIC-mode
    ///   APIC does not treat `0xFFFF_FFFF` as a broadcast.
    /// * **x2APIC broadcast quirk** (KVM `kvm_apic_mda`, on unless userspace sets
    ///   `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`): a non-IPI message to `0xFF`
    ///   reaching an x2APIC-mode APIC is rewritten to `0xFFFF_FFFF`, so the 8-bit
    ///   I/O APIC broadcast still reaches every APIC. The SDM has no such rewrite
    ///   (in x2APIC mode `0xFF` is an ordinary ID, or logical cluster 0, CPUs 0-7).
    ///   [`LocalApic::matches`] models the default (quirk on).
    /// * **Physical**: the destination equals the APIC ID of the current mode.
    ///   KVM's *hotplug hack*: an xAPIC-mode APIC also matches a destination above
    ///   `0xFF` when it equals its x2APIC (initial) ID. Real hardware instead
    ///   compares the low 8 bits with the xAPIC ID; KVM does not alias that way.
    /// * **Logical, xAPIC flat** (DFR\[31:28\] = `1111`): `LDR[31:24] & dest[7:0] != 0`.
    /// * **Logical, xAPIC cluster** (DFR\[31:28\] = `0000`): `dest[7:4] ==
    ///   LDR[31:28]` and `dest[3:0] & LDR[27:24] != 0`. Only `0xFF` is a broadcast;
    ///   cluster 15 with a partial mask is not (KVM `kvm_apic_match_logical_addr`).
    ///   A destination above `0xFF` never matches in this model (KVM compares
    ///   `dest >> 4` with the cluster). Any other DFR model matches nothing.
    /// * **Logical, x2APIC**: `dest[31:16] == LDR[31:16]` and
    ///   `dest[15:0] & LDR[15:0] != 0`.
    /// * A hardware-disabled APIC ([`ApicMode::Disabled`]) matches nothing (KVM
    ///   skips vCPUs whose APIC is not "present").
    #[inline]
    pub fn matches(&self, dest: Destination) -> bool {
        self.matches_with(dest, true)
    }

    /// [`matches`](Self::matches) with KVM's x2APIC broadcast quirk chosen by
    /// the caller: `false` models a VM with `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`
    /// (x2APIC-format MSIs, where `0xFF` is an ordinary destination).
    pub(crate) fn matches_with(&self, dest: Destination, x2apic_broadcast_quirk: bool) -> bool {
        let x2 = match self.mode {
            ApicMode::Disabled => return false,
            ApicMode::XApic => false,
            ApicMode::X2Apic => true,
        };
        let mda = if x2apic_broadcast_quirk && x2 && dest.id == XAPIC_BROADCAST {
            X2APIC_BROADCAST
        } else {
            dest.id
        };
        let broadcast = if x2 {
            X2APIC_BROADCAST
        } else {
            XAPIC_BROADCAST
        };
        if mda == broadcast {
            return true;
        }
        match dest.mode {
            DestinationMode::Physical => {
                if x2 || mda > 0xFF {
                    mda == self.initial_id
                } else {
                    mda == u32::from(self.xapic_id)
                }
            }
            DestinationMode::Logical => {
                let ldr = self.ldr();
                if x2 {
                    (ldr >> 16) == (mda >> 16) && (ldr & mda & 0xFFFF) != 0
                } else {
                    let logical_id = ldr >> 24;
                    match self.dfr() {
                        DFR_FLAT => (logical_id & mda) != 0,
                        DFR_CLUSTER => {
                            (logical_id >> 4) == (mda >> 4) && (logical_id & mda & 0xF) != 0
                        }
                        _ => false,
                    }
                }
            }
        }
    }

    /// Whether this APIC can take part in fixed or lowest-priority delivery:
    /// hardware-enabled and software-enabled.
    #[inline]
    pub(crate) fn accepts_vectored(&self) -> bool {
        self.mode != ApicMode::Disabled && self.software_enabled()
    }
}

/// Lowest-priority arbitration (SDM "Lowest Priority Delivery Mode"): among
/// the candidates that match `msg.destination` and can accept a vectored
/// interrupt (hardware-enabled, and software-enabled: SVR bit 8), the index of the one with the
/// lowest *arbitration priority* (the APR, offset 0x90 of [`LocalApic::read_register`], the SDM's formula).
///
/// **Tie-break:** the lowest index wins (the first candidate in iteration
/// order among equals). This is a deterministic stand-in for hardware's
/// unspecified choice.
///
/// **KVM differs.** KVM never compares priorities: with its default
/// `vector_hashing=1` it picks the `(vector % n)`-th of the `n` matching,
/// software-enabled vCPUs (`lowest_priority_kvm`); with `vector_hashing=0` it
/// compares `apic_arb_prio`, a per-vCPU counter of lowest-priority interrupts
/// received (`kvm_apic_compare_prio`), which rotates the target. Use this
/// function for SDM semantics and `lowest_priority_kvm` for differential
/// tests against real KVM.
///
/// Returns `None` when no candidate matches. The focus-processor rule (an APIC
/// that already has the vector in IRR or ISR wins, unless SVR bit 9 disables the
/// focus check) is not modelled; KVM ignores it too.
fn lowest_priority_sdm<'a, I>(candidates: I, msg: &InterruptMessage) -> Option<usize>
where
    I: IntoIterator<Item = (usize, &'a LocalApic)>,
{
    let mut best: Option<(u8, usize)> = None;
    for (index, apic) in candidates {
        if !apic.accepts_vectored() || !apic.matches(msg.destination) {
            continue;
        }
        let prio = apic.apr();
        best = match best {
            Some((p, i)) if p < prio || (p == prio && i <= index) => Some((p, i)),
            _ => Some((prio, index)),
        };
    }
    best.map(|(_, i)| i)
}

/// Lowest-priority target the way KVM picks it by default (`vector_hashing=1`,
/// slow path of `__kvm_irq_delivery_to_apic`): of the `n` candidates that match
/// `msg.destination` and are hardware- and software-enabled, in iteration order
/// (KVM: vCPU index order), the `(vector % n)`-th. Returns its index, or `None`
/// when nothing matches.
///
/// Caveats, all KVM behaviour the caller must handle if it matters:
/// * A *physical* lowest-priority message to `0xFF` is turned into a fixed
///   broadcast by KVM ("phys broadcast and lowest prio") and reaches everyone.
/// * KVM's optimized map path hashes over the bits of the logical destination
///   mask within the cluster instead, and drops the interrupt when the chosen
///   bit has no (enabled) APIC; it agrees with this function when every mask bit
///   names exactly one enabled APIC and candidates come in logical-bit order.
fn lowest_priority_kvm<'a, I>(candidates: I, msg: &InterruptMessage) -> Option<usize>
where
    I: IntoIterator<Item = (usize, &'a LocalApic)> + Clone,
{
    let eligible = |apic: &LocalApic| apic.accepts_vectored() && apic.matches(msg.destination);
    let count = candidates
        .clone()
        .into_iter()
        .filter(|(_, a)| eligible(a))
        .count();
    if count == 0 {
        return None;
    }
    let nth = usize::from(msg.vector.get()) % count;
    candidates
        .into_iter()
        .filter(|(_, a)| eligible(a))
        .nth(nth)
        .map(|(i, _)| i)
}

/// The lowest-priority target among `candidates` under `arbitration`: the
/// SDM's rule ([`Arbitration::SdmPriority`]) or KVM's default vector hashing
/// ([`Arbitration::KvmVectorHashing`]), the two rules
/// [`Irqchip`](crate::Irqchip) also applies. Returns the winner's index, or
/// `None` when no candidate matches `msg.destination` and is enabled.
///
/// * SDM: the matching, enabled LAPIC with the lowest *arbitration
///   priority* (the APR, offset 0x90 of [`LocalApic::read_register`]); ties
///   go to the lowest index, a deterministic stand-in for hardware's
///   unspecified choice. The focus-processor rule is not modelled (KVM
///   ignores it too).
/// * KVM (`vector_hashing=1`, the slow path of `__kvm_irq_delivery_to_apic`):
///   of the `n` candidates that match and are hardware- and
///   software-enabled, in iteration order (KVM: vCPU index order), the
///   `(vector % n)`-th. KVM turns a *physical* lowest-priority message to
///   `0xFF` into a fixed broadcast, and its optimized map path hashes over
///   the bits of a logical mask within the cluster instead (it agrees with
///   this when every mask bit names exactly one enabled APIC and candidates
///   come in logical-bit order); with `vector_hashing=0` it compares a
///   per-vCPU counter (`kvm_apic_compare_prio`), which rotates the target.
///
/// # Examples
///
/// ```
/// use eoi_exit::irqchip::Arbitration;
/// use eoi_exit::lapic::lowest_priority;
/// use eoi_exit::{
///     ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, LocalApic,
///     TriggerMode, Vector,
/// };
///
/// let apics: Vec<LocalApic> =
///     (0..3).map(|i| LocalApic::new_enabled(ApicId::new(i), ApicMode::X2Apic)).collect();
/// let msg = InterruptMessage {
///     destination: Destination { id: 0xffff_ffff, mode: DestinationMode::Physical },
///     delivery_mode: DeliveryMode::LowestPriority,
///     vector: Vector::new(0x61),
///     trigger: TriggerMode::Edge,
/// };
/// let c = apics.iter().enumerate();
/// assert_eq!(lowest_priority(c.clone(), &msg, Arbitration::SdmPriority), Some(0));
/// assert_eq!(lowest_priority(c, &msg, Arbitration::KvmVectorHashing), Some(0x61 % 3));
/// ```
pub fn lowest_priority<'a, I>(
    candidates: I,
    msg: &InterruptMessage,
    arbitration: Arbitration,
) -> Option<usize>
where
    I: IntoIterator<Item = (usize, &'a LocalApic)> + Clone,
{
    match arbitration {
        Arbitration::SdmPriority => lowest_priority_sdm(candidates, msg),
        Arbitration::KvmVectorHashing => lowest_priority_kvm(candidates, msg),
    }
}
