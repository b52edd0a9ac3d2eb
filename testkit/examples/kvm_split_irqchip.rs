//! A small VMM on Linux KVM's **split irqchip** (`KVM_CAP_SPLIT_IRQCHIP`: LAPICs in the
//! kernel, the I/O APIC in userspace) that uses this crate's [`Ioapic`] as its I/O APIC.
//!
//! What the VMM does, as any split-irqchip VMM must:
//!
//! * redirection-table writes go through [`Ioapic::mmio_write`] (IOREGSEL / IOWIN at
//!   0xFEC00000; here the host plays the guest's driver and issues the writes itself);
//! * every `route_changed` pin gets its GSI route re-installed: its entry's message, decoded
//!   in the I/O APIC's `MsiFormat` and encoded in the one KVM reads ([`Msi::from_message`]),
//!   as an MSI entry in `KVM_SET_GSI_ROUTING` (KVM re-scans every vCPU's EOI-exit bitmap);
//! * every pin in `deliver` is injected with `KVM_IRQ_LINE` on its GSI (through that route);
//! * every `KVM_EXIT_IOAPIC_EOI` is fed to [`Ioapic::eoi`]: remote IRR clears, and a line
//!   that is still asserted is delivered again.
//!
//! The guest is the tiny real-mode guest of the test harness (`tests/kvm/support.rs`): handlers
//! for vectors 0x20-0xEF that `out` their vector, EOI through the x2APIC EOI MSR and `out`
//! again; an idle loop the host steers (halt / EOI / ping). A "device" holds pin 5 high until
//! the guest's handler has run three times, then the pin is re-routed from vCPU0 to vCPU1,
//! including while an instance is still pending on vCPU0.
//!
//! Run: `cargo run --example kvm_split_irqchip` (Linux x86_64 with a usable `/dev/kvm`;
//! otherwise it prints one line saying why and exits 0).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "../tests/kvm/support.rs"]
mod kvm_support;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    if let Err(reason) = kvm_support::kvm_available() {
        println!("kvm_split_irqchip: /dev/kvm is not usable ({reason}); nothing to run");
        return;
    }
    if let Err(e) = vmm::run() {
        eprintln!("kvm_split_irqchip: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("kvm_split_irqchip: needs Linux on x86_64 (KVM); nothing to run");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod vmm {
    use eoi_exit::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
    use eoi_exit::{
        Ioapic, IoapicEffects, Msi, MsiFormat, Pin, RedirectionEntry, TriggerMode, Vector,
    };

    use crate::kvm_support::{HarnessError, IrqChipMode, Result, Route, Stop, TestVm};

    /// The device's pin (= its GSI).
    const PIN: u8 = 5;
    const VECTOR: u8 = 0x40;

    /// The VMM: KVM VM + the userspace I/O APIC.
    struct Vmm {
        t: TestVm,
        io: Ioapic,
    }

    impl Vmm {
        fn rirr(&self) -> u8 {
            u8::from(self.io.entry(Pin::new(PIN)).is_some_and(|e| e.remote_irr()))
        }

        fn line(&self) -> u8 {
            u8::from(self.io.state().line.contains(Pin::new(PIN)))
        }

        fn pin_state(&self) -> String {
            format!(
                "[pin{PIN}: line={} remote_irr={}]",
                self.line(),
                self.rirr()
            )
        }

        /// Act on what the I/O APIC asks: re-install routes, deliver pins.
        fn act(&mut self, a: IoapicEffects) -> Result<()> {
            if let Some(pin) = a.route_changed {
                let gsi = u32::from(pin.get());
                // The pin's GSI route: its entry's message as the guest
                // meant it (this I/O APIC's format, the default 8-bit one),
                // encoded as KVM reads it (no x2APIC API here: 8 bits too).
                // Masked entries too: the model never delivers a masked pin.
                let route = self
                    .io
                    .entry(pin)
                    .and_then(|e| e.message(MsiFormat::Xapic))
                    .map(|msg| {
                        Msi::from_message(&msg, MsiFormat::Xapic).expect("an 8-bit destination")
                    });
                match route {
                    Some(m) => self.t.vm.set_route(
                        gsi,
                        Route::Msi {
                            address: u64::from(m.address_hi) << 32 | u64::from(m.address_lo),
                            data: m.data,
                        },
                    ),
                    None => self.t.vm.remove_route(gsi),
                }
                self.t.vm.push_routes()?;
                let m = route;
                println!(
                    "    KVM_SET_GSI_ROUTING: gsi{gsi} -> MSI addr {:#x} data {:#x} \
                     (KVM re-scans the EOI-exit bitmaps at each vCPU's next entry)",
                    m.map_or(0, |m| m.address_lo),
                    m.map_or(0, |m| m.data)
                );
            }
            for pin in a.deliver.iter() {
                let gsi = u32::from(pin.get());
                let status = self.t.vm.pulse(gsi)?;
                println!(
                    "    deliver pin{gsi}: KVM_IRQ_LINE(gsi{gsi}) status {status} {}",
                    self.pin_state()
                );
            }
            if !a.deliver_later.is_empty() {
                println!("    (EOI storm: re-delivery deferred; not expected here)");
            }
            Ok(())
        }

        /// The guest driver's redirection write, high dword then low dword (Linux's order),
        /// through the I/O APIC's MMIO registers.
        fn write_redirection(&mut self, pin: u8, bits: u64) -> Result<()> {
            // Both halves name the same pin, so their actions merge safely into one
            // re-install (a guest's two MMIO exits could also be handled one by one).
            let reg = u64::from(REG_REDTBL_BASE + 2 * pin);
            let mut all = IoapicEffects::default();
            for (sel, val) in [(reg + 1, bits >> 32), (reg, bits & 0xffff_ffff)] {
                all |= self.io.mmio_write(IOREGSEL, 4, sel);
                all |= self.io.mmio_write(IOWIN, 4, val);
            }
            self.act(all)
        }

        fn set_line(&mut self, level: bool) -> Result<()> {
            let a = self.io.set_line(Pin::new(PIN), level);
            self.act(a)
        }

        /// Run vCPU `i` until it is idle, acting on every event. `service_on` = the handler
        /// invocation (1-based) at which the device deasserts its line (the guest's handler
        /// "services the device").
        fn run(&mut self, i: usize, service_on: u32, handled: &mut u32) -> Result<()> {
            loop {
                let stop = self.t.vcpus[i].next_stop()?;
                match stop {
                    Stop::Handler(v) => {
                        *handled += 1;
                        println!("  vCPU{i}: handler({v:#x}) entered (#{handled})");
                        if *handled == service_on && self.line() == 1 {
                            println!("  device: serviced by the handler, lowers pin{PIN}");
                            self.set_line(false)?;
                        }
                    }
                    Stop::HandlerEoi(v) => {
                        println!("  vCPU{i}: handler({v:#x}) wrote its EOI, iret");
                    }
                    Stop::EoiExit(v) => {
                        println!(
                            "  vCPU{i}: KVM_EXIT_IOAPIC_EOI vector {v:#x} -> Ioapic::eoi {}",
                            self.pin_state()
                        );
                        let a = self.io.eoi(Vector::new(v));
                        println!(
                            "    remote IRR cleared{} {}",
                            if a.deliver.is_empty() {
                                ""
                            } else {
                                "; line still asserted: delivered again"
                            },
                            self.pin_state()
                        );
                        self.act(a)?;
                    }
                    Stop::Idle => {
                        println!("  vCPU{i}: idle (halted, nothing pending)");
                        return Ok(());
                    }
                    other => {
                        return Err(HarnessError(format!("vCPU{i}: unexpected {other:?}")));
                    }
                }
            }
        }

        fn exits(&self, i: usize) -> u32 {
            self.t.vcpus[i].eoi_exits(VECTOR)
        }
    }

    fn level_entry(dest: u32) -> u64 {
        RedirectionEntry::fixed(Vector::new(VECTOR), TriggerMode::Level, dest).0
    }

    pub fn run() -> Result<()> {
        println!(
            "kvm_split_irqchip: 2 vCPUs, KVM_CAP_SPLIT_IRQCHIP (24 pins), userspace I/O APIC = eoi_exit::Ioapic"
        );
        let mut t = TestVm::new(IrqChipMode::Split, 2)?;
        t.vm.push_routes()?;
        t.all_ready()?;
        for v in &mut t.vcpus {
            v.ping()?;
            v.stop_on_eoi_exit = true;
        }
        let mut vmm = Vmm {
            t,
            io: Ioapic::default(),
        };
        println!("guest: both vCPUs ready (x2APIC on, SVR enabled, TPR 0)");

        println!(
            "\n1. the guest's driver programs pin{PIN}: vector {VECTOR:#x}, level, physical, APIC id 0"
        );
        vmm.write_redirection(PIN, level_entry(0))?;

        println!("\n2. the device raises pin{PIN} and keeps it high until the 3rd handler run");
        vmm.set_line(true)?;
        let mut handled = 0;
        vmm.run(0, 3, &mut handled)?;
        println!(
            "  => vCPU0 handled {handled} interrupt(s), {} KVM_EXIT_IOAPIC_EOI; {}",
            vmm.exits(0),
            vmm.pin_state()
        );

        println!(
            "\n3. the guest re-routes pin{PIN} to APIC id 1 (vCPU1); the device raises it again"
        );
        vmm.write_redirection(PIN, level_entry(1))?;
        vmm.set_line(true)?;
        let mut handled1 = 0;
        vmm.run(1, 1, &mut handled1)?;
        println!(
            "  => vCPU1 handled {handled1}, {} EOI exit(s) on vCPU1; {}",
            vmm.exits(1),
            vmm.pin_state()
        );

        println!(
            "\n4. re-route while an instance is pending: pin{PIN} back to vCPU0 and raised while \
             vCPU0 is stopped (0x40 waits in its IRR), moved to vCPU1, then the device drops the \
             line; remote IRR waits for vCPU0's EOI"
        );
        vmm.write_redirection(PIN, level_entry(0))?;
        vmm.set_line(true)?;
        vmm.write_redirection(PIN, level_entry(1))?;
        vmm.set_line(false)?;
        let before = vmm.exits(0);
        let mut handled0 = 0;
        vmm.run(0, 1, &mut handled0)?;
        println!(
            "  => the stale 0x40 on vCPU0 still exited ({} EOI exit(s)): KVM intercepts a vector \
             that is pending in IRR/ISR at the re-scan, so remote IRR is not wedged; {}",
            vmm.exits(0) - before,
            vmm.pin_state()
        );
        let before = vmm.exits(0);
        vmm.t.vm.msi(0, VECTOR, false)?;
        let mut handled0 = 0;
        vmm.run(0, 0, &mut handled0)?;
        println!(
            "  then an edge MSI {VECTOR:#x} to vCPU0: {} EOI exit(s) (Linux >= 6.16 drops the stale \
             bit after that EOI's re-scan; before 6.16 it kept exiting)",
            vmm.exits(0) - before
        );

        if vmm.t.vcpus.iter().all(|v| v.handlers_saw_own_isr == 0) {
            println!(
                "\nnote: this host's LAPIC EOIs an interrupt at delivery (the handlers never saw \
                 their vector in ISR), so each EOI exit came right after the handler's first out"
            );
        }
        println!(
            "\nsummary: KVM_EXIT_IOAPIC_EOI vCPU0 {} / vCPU1 {}; {}",
            vmm.exits(0),
            vmm.exits(1),
            vmm.pin_state()
        );
        println!("trace: {}", vmm.t.trace().render());
        Ok(())
    }
}
