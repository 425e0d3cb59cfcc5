//! The shared console's input side: bytes typed on the one physical UART go
//! to the partition in focus; an escape sequence moves the focus or asks
//! for the partitions' status.
//!
//! `Ctrl-\ n` focuses the next partition, `Ctrl-\ s` prints the status,
//! and `Ctrl-\ Ctrl-\` sends one `Ctrl-\` to the guest. (Ctrl-A is QEMU's
//! own escape, so it is left alone.)

/// The escape byte: Ctrl-\.
pub const ESCAPE: u8 = 0x1c;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Deliver this byte to the partition in focus.
    Byte(u8),
    FocusNext,
    Status,
    /// Nothing to do (the escape byte itself, or an unknown command).
    Nothing,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct InputRouter {
    escaped: bool,
}

impl InputRouter {
    pub const fn new() -> Self {
        InputRouter { escaped: false }
    }

    pub fn feed(&mut self, b: u8) -> Input {
        if core::mem::take(&mut self.escaped) {
            return match b {
                b'n' | b'N' | b'\t' => Input::FocusNext,
                b's' | b'S' => Input::Status,
                ESCAPE => Input::Byte(ESCAPE),
                _ => Input::Nothing,
            };
        }
        if b == ESCAPE {
            self.escaped = true;
            return Input::Nothing;
        }
        Input::Byte(b)
    }
}

/// The ANSI colour of partition `index`'s prefix, cycling through six.
pub fn colour(index: usize) -> &'static str {
    const C: [&str; 6] = [
        "\x1b[32m", "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[34m", "\x1b[31m",
    ];
    C[index % C.len()]
}

pub const RESET: &str = "\x1b[0m";
/// The hypervisor's own lines: bold.
pub const HYPERVISOR: &str = "\x1b[1m";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_and_escapes_act() {
        let mut r = InputRouter::new();
        assert_eq!(r.feed(b'a'), Input::Byte(b'a'));
        assert_eq!(r.feed(ESCAPE), Input::Nothing);
        assert_eq!(r.feed(b'n'), Input::FocusNext);
        assert_eq!(r.feed(b'n'), Input::Byte(b'n'));
        assert_eq!(r.feed(ESCAPE), Input::Nothing);
        assert_eq!(r.feed(b's'), Input::Status);
        assert_eq!(r.feed(ESCAPE), Input::Nothing);
        assert_eq!(r.feed(ESCAPE), Input::Byte(ESCAPE));
        assert_eq!(r.feed(ESCAPE), Input::Nothing);
        assert_eq!(r.feed(b'x'), Input::Nothing);
        assert_eq!(r.feed(b'x'), Input::Byte(b'x'));
    }

    #[test]
    fn colours_cycle() {
        assert_eq!(colour(0), colour(6));
        assert_ne!(colour(0), colour(1));
    }
}
