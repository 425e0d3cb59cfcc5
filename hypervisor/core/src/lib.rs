//! Partita's portable core: everything the hypervisor decides without
//! touching hardware. It builds for the host, where it is unit-tested, and
//! for the bare-metal target, where the `partita` binary drives it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod console;
pub mod control;
pub mod dtb;
pub mod guest_cpu;
pub mod guest_fdt;
pub mod layout;
pub mod lifecycle;
pub mod package;
pub mod pagetable;
pub mod psci;
pub mod ratelimit;
pub mod rpmsg;
pub mod sdt;
pub mod trap;
pub mod tree;
pub mod vgic;
pub mod virtio;
pub mod vuart;
