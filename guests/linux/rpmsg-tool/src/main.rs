//! `partita-rpmsg`: Linux's side of the demo. It talks to the channels the
//! RTOS announces, `rpmsg-raw` (echo, address 1024) and `rpmsg-jitter`
//! (1025), as any OpenAMP user does: through the `/dev/rpmsgN` of Linux's
//! own rpmsg_char driver bound to each channel (`rpmsg-raw` binds by
//! itself; `rpmsg-jitter` through `driver_override`). It sends messages
//! of assorted sizes, checks every echo, and prints round-trip figures
//! and the RTOS's jitter report.
//!
//! Usage: partita-rpmsg [COUNT] | jitter | drivers | rtos-off | crash

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ECHO: u32 = 1024;
const JITTER: u32 = 1025;
const MAX_PAYLOAD: usize = 496;
const RPMSG_DEVICES: &str = "/sys/bus/rpmsg/devices";
const CHRDEV: &str = "/sys/bus/rpmsg/drivers/rpmsg_chrdev";
/// How long a channel may take to appear: the RTOS announces it once its
/// remoteproc has started it or Linux's driver has come up.
const APPEAR: Duration = Duration::from_secs(10);

/// The channel the RTOS announced as `name` at `addr`
/// (`virtioN.NAME.-1.ADDR`), waiting for it to appear.
fn channel(name: &str, addr: u32) -> Result<PathBuf, String> {
    let suffix = format!(".{name}.-1.{addr}");
    let end = Instant::now() + APPEAR;
    loop {
        let found = fs::read_dir(RPMSG_DEVICES)
            .map_err(|e| format!("{RPMSG_DEVICES}: {e}"))?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
        if let Some(e) = found {
            return Ok(e.path());
        }
        if Instant::now() > end {
            return Err(format!("no channel {name} at {addr} was announced"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn driver_of(dev: &Path) -> String {
    fs::read_link(dev.join("driver"))
        .map(|t| {
            t.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|_| "none".into())
}

/// Opens the `/dev/rpmsgN` of the announced channel `name` at `dst`,
/// binding rpmsg_char to it first if nothing has.
fn endpoint(name: &str, dst: u32) -> Result<File, String> {
    let chan = channel(name, dst)?;
    let id = chan
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if driver_of(&chan) == "none" {
        fs::write(chan.join("driver_override"), "rpmsg_chrdev")
            .and_then(|_| fs::write(format!("{CHRDEV}/bind"), &id))
            .map_err(|e| format!("binding {id} to rpmsg_chrdev: {e}"))?;
    }
    // rpmsg_char makes the device a moment after it binds.
    let end = Instant::now() + APPEAR;
    loop {
        let dev = fs::read_dir(chan.join("rpmsg"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| PathBuf::from("/dev").join(e.file_name()))
            .find_map(|dev| OpenOptions::new().read(true).write(true).open(dev).ok());
        if let Some(f) = dev {
            return Ok(f);
        }
        if Instant::now() > end {
            return Err(format!("no /dev/rpmsgN appeared for {id}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// The drivers bound to the virtio and rpmsg devices: Linux's own.
fn drivers() -> Result<(), String> {
    // The echo channel's appearance says the RTOS's announcements arrived.
    channel("rpmsg-raw", ECHO)?;
    for bus in ["/sys/bus/virtio/devices", RPMSG_DEVICES] {
        let mut devs: Vec<PathBuf> = fs::read_dir(bus)
            .map_err(|e| format!("{bus}: {e}"))?
            .flatten()
            .map(|d| d.path())
            .collect();
        devs.sort();
        for d in devs {
            println!(
                "partita-rpmsg: {} driver {}",
                d.file_name().unwrap_or_default().to_string_lossy(),
                driver_of(&d)
            );
        }
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
