//! `partita-tool check SYSTEM.dtb` validates a System Device Tree with the
//! hypervisor's own reader and prints the partition table.
//! `partita-tool pack ...` builds the boot image: the hypervisor followed
//! by the boot package (the SDT and every domain's images).
//! `partita-tool guest-dtb ...` writes the device tree a domain's guest
//! gets. `partita-tool help SUBCOMMAND` says more (clap).

use clap::{Parser, Subcommand};
use partita_core::guest_fdt;
use partita_core::layout;
use partita_core::package;
use partita_core::sdt::SystemConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check a System Device Tree, build a Partita boot image, or show the
/// device tree a domain's guest will get.
#[derive(Parser)]
#[command(name = "partita-tool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a System Device Tree with the hypervisor's own reader and
    /// print the partition table; exits 1 with the node and the reason
    /// if the tree is refused.
    Check {
        /// The System Device Tree, compiled (dtc -O dtb).
        #[arg(value_name = "SYSTEM.dtb")]
        sdt: String,
    },
    /// Build a boot image: the hypervisor followed by the boot package
    /// (the SDT and every image its domains name).
    Pack {
        /// The hypervisor as a flat arm64 Image (partita.bin).
        #[arg(long, value_name = "FILE")]
        hypervisor: String,
        /// The System Device Tree, compiled.
        #[arg(long, value_name = "SYSTEM.dtb")]
        sdt: String,
        /// A boot-package entry: a kernel or initrd a domain names in
        /// `partita,kernel` / `partita,initrd`. Repeat for each.
        #[arg(long = "image", value_name = "NAME=FILE", value_parser = parse_image)]
        images: Vec<(String, String)>,
        /// Pack the SDT even if the tool refuses it, to test the
        /// hypervisor's own refusals at boot.
        #[arg(long)]
        unchecked: bool,
        /// Where to write the boot image.
        #[arg(short = 'o', value_name = "OUT.img")]
        out: PathBuf,
    },
    /// Write the device tree that DOMAIN's guest gets at boot.
    GuestDtb {
        /// The System Device Tree, compiled.
        #[arg(value_name = "SYSTEM.dtb")]
        sdt: String,
        /// The domain's name.
        #[arg(value_name = "DOMAIN")]
        domain: String,
        /// Where to write the guest's device tree.
        #[arg(value_name = "OUT.dtb")]
        out: String,
    },
}

fn parse_image(v: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), file.to_owned()))
        }
        _ => Err(format!("wants NAME=FILE, not `{v}`")),
    }
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::Check { sdt } => check(&sdt),
        Command::Pack {
            hypervisor,
            sdt,
            images,
            unchecked,
            out,
        } => pack(&hypervisor, &sdt, &images, unchecked, &out),
        Command::GuestDtb { sdt, domain, out } => guest_dtb(&sdt, &domain, &out),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partita-tool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn load_sdt(path: &str) -> Result<(Vec<u8>, SystemConfig), String> {
    let blob = read(path)?;
    let sys = SystemConfig::from_dtb(&blob).map_err(|e| format!("{path}: {e}"))?;
    Ok((blob, sys))
}

fn check(path: &str) -> Result<(), String> {
    let (_, sys) = load_sdt(path)?;
    println!(
        "{path}: {} ({} CPUs, {}), hypervisor at {}",
        sys.model,
        sys.cpus.len(),
        sys.gic.version,
        sys.hypervisor
    );
    print!("{}", sys.partition_table());
    Ok(())
}

fn guest_dtb(path: &str, domain: &str, out: &str) -> Result<(), String> {
    let (blob, sys) = load_sdt(path)?;
    let d = sys
        .domains
        .iter()
        .find(|d| d.name == domain)
        .ok_or_else(|| format!("{path}: no domain `{domain}`"))?;
    let m = d.memory[0];
    let dtb = m
        .end()
        .checked_sub(guest_fdt::DTB_MAX)
        .filter(|&a| a >= m.base)
        .ok_or_else(|| {
            format!(
                "{}: memory {m} is smaller than a guest device tree's {:#x} bytes",
                d.path,
                guest_fdt::DTB_MAX
            )
        })?;
    let l = layout::GuestLayout {
        kernel: m.base,
        dtb,
        initrd: None,
    };
    let dtb = guest_fdt::build(&blob, &sys, d, &l).map_err(|e| format!("{}: {e}", d.path))?;
    std::fs::write(out, dtb).map_err(|e| format!("{out}: {e}"))
}

fn pack(
    hyp: &str,
    sdt: &str,
    image_files: &[(String, String)],
    unchecked: bool,
    out: &std::path::Path,
) -> Result<(), String> {
    let mut images = Vec::new();
    for (name, file) in image_files {
        images.push((name.clone(), read(file)?));
    }
    let mut image = read(hyp)?;
    let blob = read(sdt)?;
    let sys = match SystemConfig::from_dtb(&blob) {
        Ok(s) => Some(s),
        Err(_) if unchecked => None,
        Err(e) => return Err(format!("{sdt}: {e}")),
    };

    // Refuse here what the hypervisor would refuse at boot.
    for d in sys.iter().flat_map(|s| &s.domains) {
        let find = |n: &str| images.iter().find(|(name, _)| name == n).map(|(_, b)| b);
        let kernel = find(&d.kernel).ok_or_else(|| {
            format!(
                "{}: kernel `{}` was not given with --image",
                d.path, d.kernel
            )
        })?;
        let initrd = match &d.initrd {
            Some(n) => Some(
                find(n)
                    .ok_or_else(|| format!("{}: initrd `{n}` was not given with --image", d.path))?
                    .len() as u64,
            ),
            None => None,
        };
        layout::plan(&d.memory[0], kernel, guest_fdt::DTB_MAX, initrd)
            .map_err(|e| format!("{}: {e}", d.path))?;
    }

    // The package starts at the 4 KiB boundary after the image's whole
    // footprint (its BSS included), which the Image header states.
    if image.len() < 64 || &image[56..60] != b"ARM\x64" {
        return Err(format!("{hyp}: not an arm64 Image (no header)"));
    }
    let footprint = u64::from_le_bytes(image[16..24].try_into().unwrap()) as usize;
    image.resize(footprint.next_multiple_of(4096), 0);
    let mut entries: Vec<(&str, &[u8])> = vec![(package::SDT, &blob)];
    entries.extend(images.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let pkg = package::build(&entries).map_err(|e| e.to_string())?;
    image.extend_from_slice(&pkg);
    let min_heap = 4 << 20;
    if let Some(sys) = sys
        .as_ref()
        .filter(|s| image.len() as u64 + min_heap > s.hypervisor.size)
    {
        return Err(format!(
            "{sdt}: the boot image is {:#x} bytes; with a 4 MiB heap it does not fit the hypervisor's {}",
            image.len(),
            sys.hypervisor
        ));
    }
    std::fs::write(out, &image).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{}: {} bytes (hypervisor {footprint:#x}, package {} bytes)",
        out.display(),
        image.len(),
        pkg.len()
    );
    Ok(())
}
