//! `partita-rpmsg`: Linux's side of the demo. It makes endpoints towards
//! the RTOS's `rpmsg-raw` (echo, address 1024) and `rpmsg-jitter` (1025)
//! through `/dev/rpmsg_ctrl0` (Linux's own rpmsg_char driver), sends
//! messages of assorted sizes, checks every echo, and prints round-trip
//! figures and the RTOS's jitter report.
//!
//! Usage: partita-rpmsg [COUNT] | jitter | drivers | rtos-off | crash

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ECHO: u32 = 1024;
const JITTER: u32 = 1025;
const MAX_PAYLOAD: usize = 496;
/// _IOW(0xb5, 0x1, struct rpmsg_endpoint_info): name[32], src, dst.
const RPMSG_CREATE_EPT_IOCTL: libc::c_ulong = 0x4028_b501;
const RPMSG_ADDR_ANY: u32 = u32::MAX;

/// Makes an endpoint whose messages go to `dst` and returns its device.
fn endpoint(name: &str, dst: u32) -> Result<File, String> {
    let ctrl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/rpmsg_ctrl0")
        .map_err(|e| format!("/dev/rpmsg_ctrl0: {e}"))?;
    let mut info = [0u8; 40];
    info[..name.len().min(31)].copy_from_slice(&name.as_bytes()[..name.len().min(31)]);
    info[32..36].copy_from_slice(&RPMSG_ADDR_ANY.to_ne_bytes());
    info[36..40].copy_from_slice(&dst.to_ne_bytes());
    // SAFETY: the ioctl reads a 40-byte struct rpmsg_endpoint_info.
    if unsafe { libc::ioctl(ctrl.as_raw_fd(), RPMSG_CREATE_EPT_IOCTL as _, info.as_ptr()) } < 0 {
        return Err(format!(
            "RPMSG_CREATE_EPT_IOCTL for {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The new character device is the one whose dst is ours.
    for _ in 0..100 {
        for e in fs::read_dir("/sys/class/rpmsg")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let dir = e.path();
            let dst_of = fs::read_to_string(dir.join("dst")).unwrap_or_default();
            if dst_of.trim() == dst.to_string() {
                let dev = PathBuf::from("/dev").join(e.file_name());
                if let Ok(f) = OpenOptions::new().read(true).write(true).open(&dev) {
                    return Ok(f);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("no /dev/rpmsgN appeared for {name}"))
}

fn payload(seq: usize, out: &mut [u8; MAX_PAYLOAD]) -> usize {
    let len = 1 + (seq * 61) % MAX_PAYLOAD;
    for (i, b) in out[..len].iter_mut().enumerate() {
        *b = (seq * 7 + i) as u8;
    }
    len
}

fn echo(count: usize) -> Result<(), String> {
    let mut ep = endpoint("rpmsg-raw", ECHO)?;
    println!(
        "partita-rpmsg: endpoint to rpmsg-raw (address {ECHO}) ready; sending {count} messages"
    );
    let (mut msg, mut back) = ([0u8; MAX_PAYLOAD], [0u8; 512]);
    let mut rtt = Vec::with_capacity(count);
    let mut bytes = 0;
    for seq in 0..count {
        let len = payload(seq, &mut msg);
        let t = Instant::now();
        ep.write_all(&msg[..len])
            .map_err(|e| format!("write: {e}"))?;
        let n = ep.read(&mut back).map_err(|e| format!("read: {e}"))?;
        rtt.push(t.elapsed());
        if back[..n] != msg[..len] {
            return Err(format!(
                "message {seq}: {len} bytes sent, {n} different bytes came back"
            ));
        }
        bytes += len;
    }
    rtt.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "partita-rpmsg: {count} messages ({bytes} bytes) echoed intact; round trip min {:.0} us, median {:.0} us, max {:.0} us",
        us(rtt[0]),
        us(rtt[count / 2]),
        us(rtt[count - 1])
    );
    Ok(())
}

fn jitter() -> Result<(), String> {
    let mut ep = endpoint("rpmsg-jitter", JITTER)?;
    ep.write_all(b"report").map_err(|e| format!("write: {e}"))?;
    let mut b = [0u8; 512];
    let n = ep.read(&mut b).map_err(|e| format!("read: {e}"))?;
    println!("partita-rpmsg: RTOS {}", String::from_utf8_lossy(&b[..n]));
    Ok(())
}

/// Asks the RTOS to report and power its partition off.
fn rtos_off() -> Result<(), String> {
    endpoint("rpmsg-jitter", JITTER)?
        .write_all(b"off")
        .map_err(|e| format!("write: {e}"))
}

/// Asks the RTOS to crash (an exception the hypervisor cannot hand back),
/// for remoteproc's recovery to show.
fn crash() -> Result<(), String> {
    endpoint("rpmsg-jitter", JITTER)?
        .write_all(b"crash")
        .map_err(|e| format!("write: {e}"))
}

/// The drivers bound to the rpmsg devices: Linux's own.
fn drivers() -> Result<(), String> {
    let link = |p: &str| {
        fs::read_link(p)
            .map(|t| {
                t.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|_| "none".into())
    };
    for d in fs::read_dir("/sys/bus/virtio/devices")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        println!(
            "partita-rpmsg: {} driver {}",
            d.file_name().to_string_lossy(),
            link(&format!("{}/driver", d.path().display()))
        );
    }
    for drv in [
        "/sys/bus/rpmsg/drivers/rpmsg_chrdev",
        "/sys/bus/rpmsg/drivers/rpmsg_ctrl",
    ] {
        println!(
            "partita-rpmsg: {drv} {}",
            if fs::metadata(drv).is_ok() {
                "present"
            } else {
                "missing"
            }
        );
    }
    Ok(())
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let r = match arg.as_str() {
        "jitter" => jitter(),
        "rtos-off" => rtos_off(),
        "crash" => crash(),
        "drivers" => drivers(),
        n => echo(n.parse().unwrap_or(1000)),
    };
    if let Err(e) = r {
        eprintln!("partita-rpmsg: {e}");
        std::process::exit(1);
    }
}
