//! `partita-tool check SYSTEM.dtb` validates a System Device Tree with the
//! hypervisor's own reader and prints the partition table.
//! `partita-tool pack ...` builds the boot image: the hypervisor followed
//! by the boot package (the SDT and every domain's images).

use partita_core::guest_fdt;
use partita_core::layout;
use partita_core::package;
use partita_core::sdt::SystemConfig;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  partita-tool check SYSTEM.dtb
  partita-tool pack --hypervisor partita.bin --sdt SYSTEM.dtb [--image NAME=FILE]... [--unchecked] -o OUT.img
  partita-tool guest-dtb SYSTEM.dtb DOMAIN OUT.dtb";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("check") if args.len() == 2 => check(&args[1]),
        Some("pack") => pack(&args[1..]),
        Some("guest-dtb") if args.len() == 4 => guest_dtb(&args[1], &args[2], &args[3]),
        _ => Err(USAGE.into()),
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
    let l = layout::GuestLayout {
        kernel: m.base,
        dtb: m.end() - guest_fdt::DTB_MAX,
        initrd: None,
    };
    let dtb = guest_fdt::build(&blob, &sys, d, &l).map_err(|e| format!("{}: {e}", d.path))?;
    std::fs::write(out, dtb).map_err(|e| format!("{out}: {e}"))
}

fn pack(args: &[String]) -> Result<(), String> {
    let (mut hyp, mut sdt, mut out, mut images, mut unchecked) =
        (None, None, None, Vec::new(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--hypervisor" => hyp = Some(val()?),
            "--sdt" => sdt = Some(val()?),
            "-o" => out = Some(PathBuf::from(val()?)),
            // For tests of the hypervisor's own refusals at boot.
            "--unchecked" => unchecked = true,
            "--image" => {
                let v = val()?;
                let (name, file) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--image wants NAME=FILE, not `{v}`"))?;
                images.push((name.to_owned(), read(file)?));
            }
            _ => return Err(format!("unknown argument `{a}`\n{USAGE}")),
        }
    }
    let (Some(hyp), Some(sdt), Some(out)) = (hyp, sdt, out) else {
        return Err(USAGE.into());
    };
    let mut image = read(&hyp)?;
    let blob = read(&sdt)?;
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
    std::fs::write(&out, &image).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{}: {} bytes (hypervisor {footprint:#x}, package {} bytes)",
        out.display(),
        image.len(),
        pkg.len()
    );
    Ok(())
}
