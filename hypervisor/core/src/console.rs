//! The shared console, without its hardware.
//!
//! Input: bytes typed on the one physical UART go to the partition in
//! focus; an escape sequence moves the focus or asks for the partitions'
//! status. `Ctrl-\ n` focuses the next partition, `Ctrl-\ s` prints the
//! status, and `Ctrl-\ Ctrl-\` sends one `Ctrl-\` to the guest. (Ctrl-A is
//! QEMU's own escape, so it is left alone.)
//!
//! Output: whole lines go into an [`OutputRing`], from which the UART is
//! fed only as far as its FIFO has room, so no CPU ever waits on the UART;
//! a line that does not fit is dropped and counted. Guest text goes
//! through [`sanitise`] on its way in, so only the hypervisor writes
//! prefixes, colours and line starts.

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

/// Whole lines waiting for the UART. A line goes in entirely or not at
/// all ([`OutputRing::append`], then [`Append::commit`]); the UART takes
/// bytes from the front ([`OutputRing::pop`]) as its FIFO has room.
pub struct OutputRing<const N: usize> {
    buf: [u8; N],
    /// Index of the oldest byte not yet given to the UART.
    head: usize,
    /// Bytes committed and not yet given to the UART.
    len: usize,
    /// Lines dropped since the last one that got in.
    dropped: u32,
    /// Lines dropped since boot.
    pub total_dropped: u64,
}

impl<const N: usize> Default for OutputRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> OutputRing<N> {
    pub const fn new() -> Self {
        OutputRing {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
            total_dropped: 0,
        }
    }

    /// Starts a line after everything committed.
    pub fn append(&mut self) -> Append<'_, N> {
        Append {
            ring: self,
            added: 0,
            overflow: false,
        }
    }

    /// The next byte for the UART, left in place.
    pub fn peek(&self) -> Option<u8> {
        (self.len > 0).then(|| self.buf[self.head])
    }

    /// The next byte for the UART.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let b = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(b)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Lines dropped since the last line that got in: the next line
    /// should say so first.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

/// A line on its way into an [`OutputRing`]: nothing of it is visible to
/// `pop` before `commit`, and nothing is left of it if it does not fit.
pub struct Append<'a, const N: usize> {
    ring: &'a mut OutputRing<N>,
    added: usize,
    overflow: bool,
}

impl<const N: usize> Append<'_, N> {
    /// Adds bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        if self.overflow || self.ring.len + self.added + bytes.len() > N {
            self.overflow = true;
            return;
        }
        for &b in bytes {
            let at = (self.ring.head + self.ring.len + self.added) % N;
            self.ring.buf[at] = b;
            self.added += 1;
        }
    }

    /// Adds trusted text, each `\n` as `\r\n`.
    pub fn text(&mut self, s: &str) {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.raw(b"\r\n");
            }
            self.raw(part.as_bytes());
        }
    }

    /// Adds a guest's text through [`sanitise`]; `col` is where the
    /// guest's text on this terminal line has got to (see there).
    pub fn guest(&mut self, text: &[u8], col: &mut u32) {
        sanitise(text, col, |b| self.raw(b));
    }

    /// Whether everything so far fits.
    pub fn fits(&self) -> bool {
        !self.overflow
    }

    /// Makes the line visible to `pop`, or drops and counts it if it did
    /// not fit; true if it got in.
    pub fn commit(self) -> bool {
        if self.overflow {
            self.ring.dropped = self.ring.dropped.saturating_add(1);
            self.ring.total_dropped = self.ring.total_dropped.saturating_add(1);
            return false;
        }
        self.ring.len += self.added;
        self.ring.dropped = 0;
        true
    }
}

impl<const N: usize> core::fmt::Write for Append<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.text(s);
        Ok(())
    }
}

/// Passes a guest's text to `out` so that it cannot move the cursor
/// anywhere but forward on its own line, start a new line, or change the
/// terminal's state: what only the hypervisor may do (prefixes, colours,
/// line starts).
///
/// - UTF-8 text passes as it is, as does a tab (it only moves right);
/// - a whole CSI escape sequence (`ESC [` ... final byte: colours, cursor
///   moves, a shell asking where the cursor is) is left out, so a colour
///   `ls` or a shell's line editing reads as plain text;
/// - a backspace passes only while `col`, a lower bound of how many
///   columns of guest text precede it on this terminal line, is above
///   zero, so it cannot reach the prefix; otherwise it is shown as `^H`;
/// - every other C0 control (ESC, CR, BEL...) and DEL is shown in caret
///   notation (`^[`, `^M`, `^G`, `^?`), C1 controls as `M-^[` and so on
///   (as `cat -v` does), and bytes that are not UTF-8 as `\xNN`.
///
/// `col` counts only ASCII characters: other characters may be as narrow
/// as zero columns (combining marks), and a lower bound is what keeps the
/// prefix out of reach.
pub fn sanitise(text: &[u8], col: &mut u32, mut out: impl FnMut(&[u8])) {
    let caret = |c: u8| [b'^', c ^ 0x40];
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid();
        let mut chars = valid.char_indices();
        while let Some((at, ch)) = chars.next() {
            let mut utf8 = [0u8; 4];
            if ch == '\x1b' {
                if let Some(n) = csi_len(&valid.as_bytes()[at..]) {
                    // All ASCII: skip its other bytes.
                    for _ in 1..n {
                        chars.next();
                    }
                    continue;
                }
            }
            match ch {
                '\t' => {
                    out(b"\t");
                    *col = col.saturating_add(1);
                }
                '\x08' if *col > 0 => {
                    out(b"\x08");
                    *col -= 1;
                }
                '\0'..='\x1f' | '\x7f' => {
                    out(&caret(ch as u8));
                    *col = col.saturating_add(2);
                }
                '\u{80}'..='\u{9f}' => {
                    out(b"M-");
                    out(&caret(ch as u8 - 0x80));
                    *col = col.saturating_add(4);
                }
                c if c.is_ascii() => {
                    out(c.encode_utf8(&mut utf8).as_bytes());
                    *col = col.saturating_add(1);
                }
                c => out(c.encode_utf8(&mut utf8).as_bytes()),
            }
        }
        for &b in chunk.invalid() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            *col = col.saturating_add(4);
        }
    }
}

/// The length of the CSI sequence (ECMA-48 5.4: `ESC [`, parameter bytes
/// 0x30-0x3f, intermediate bytes 0x20-0x2f, one final byte 0x40-0x7e) at
/// the start of `b`, if a whole one is there.
fn csi_len(b: &[u8]) -> Option<usize> {
    if b.get(..2)? != b"\x1b[" {
        return None;
    }
    let mut i = 2;
    while matches!(b.get(i)?, 0x30..=0x3f) {
        i += 1;
    }
    while matches!(b.get(i)?, 0x20..=0x2f) {
        i += 1;
    }
    matches!(b.get(i)?, 0x40..=0x7e).then_some(i + 1)
}

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

    fn clean(text: &[u8], col: u32) -> (String, u32) {
        let mut col = col;
        let mut out = Vec::new();
        sanitise(text, &mut col, |b| out.extend_from_slice(b));
        (String::from_utf8(out).unwrap(), col)
    }

    #[test]
    fn plain_text_and_utf8_pass() {
        assert_eq!(clean(b"hello, world", 0).0, "hello, world");
        assert_eq!(
            clean("h\u{e9}llo \u{2603} \u{1f600}".as_bytes(), 0).0,
            "h\u{e9}llo \u{2603} \u{1f600}"
        );
        assert_eq!(clean(b"a\tb", 0), ("a\tb".into(), 3));
    }

    #[test]
    fn escapes_and_returns_cannot_forge_a_prefix() {
        // Escape sequences are left out, other controls shown.
        let forged = b"\r\x1b[2K\x1b[1m[partita cpu0] \x1b[0mlies";
        let (s, _) = clean(forged, 0);
        assert_eq!(s, "^M[partita cpu0] lies");
        assert_eq!(clean(b"/ # \x1b[6n", 0).0, "/ # ");
        // Escapes that are not whole CSI sequences are shown.
        assert_eq!(
            clean(b"\x1b]0;title\x07 \x1bc \x1b[12", 0).0,
            "^[]0;title^G ^[c ^[[12"
        );
        assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
        assert_eq!(clean(b"\x07\x7f\x00", 0).0, "^G^?^@");
        // C1 controls (CSI as U+009B) and bytes that are not UTF-8.
        assert_eq!(clean("\u{9b}31m".as_bytes(), 0).0, "M-^[31m");
        assert_eq!(
            clean(b"\x9b\xff ok \xe2\x82", 0).0,
            "\\x9b\\xff ok \\xe2\\x82"
        );
    }

    #[test]
    fn backspaces_stay_within_the_guests_own_text() {
        // A shell erasing its last character ("\b \b") works...
        assert_eq!(clean(b"ls\x08 \x08", 0), ("ls\x08 \x08".into(), 1));
        // ...but never reaches back over the prefix.
        // (A `^H` shown is the guest's own text: the next one may erase it.)
        let (s, col) = clean(b"ab\x08\x08\x08\x08\x08\x08[partita cpu0]", 0);
        assert_eq!(s, "ab\x08\x08^H\x08\x08^H[partita cpu0]");
        assert_eq!(col, 16);
        // Where a line goes on (a prompt), the text before it counts.
        assert_eq!(clean(b"\x08\x08\x08", 2).0, "\x08\x08^H");
        // Non-ASCII text counts for nothing: it may be zero columns wide.
        assert_eq!(clean("e\u{301}\x08\x08".as_bytes(), 0).0, "e\u{301}\x08^H");
    }

    #[test]
    fn sanitised_output_never_holds_a_control_that_moves_left_of_its_start() {
        // Every byte string: the only controls out are tabs and
        // backspaces, never more backspaces than printed ASCII before them.
        proptest::proptest!(|(text: Vec<u8>, start in 0u32..4)| {
            let (s, _) = clean(&text, start);
            let mut room = i64::from(start);
            for b in s.bytes() {
                match b {
                    0x08 => { room -= 1; proptest::prop_assert!(room >= 0); }
                    b'\t' => room += 1,
                    0x20..=0x7e => room += 1,
                    0x80..=0xff => {}
                    other => proptest::prop_assert!(false, "control {other:#x} passed"),
                }
            }
        });
    }

    #[test]
    fn lines_go_in_whole_or_not_at_all_and_drops_are_counted() {
        let mut r = OutputRing::<32>::new();
        let mut a = r.append();
        a.text("first\n");
        assert!(a.commit());
        assert_eq!(r.len(), 7);
        let mut a = r.append();
        a.raw(&[b'x'; 20]);
        a.raw(&[b'y'; 20]);
        assert!(!a.fits());
        assert!(!a.commit());
        assert_eq!((r.dropped(), r.total_dropped), (1, 1));
        // Nothing of the dropped line is there.
        let out: Vec<u8> = core::iter::from_fn(|| r.pop()).collect();
        assert_eq!(out, b"first\r\n");
        // The next line that fits clears the count (the caller wrote its
        // notice in front of it).
        let mut a = r.append();
        a.text("2 lines dropped\n");
        assert!(a.commit());
        assert_eq!((r.dropped(), r.total_dropped), (0, 1));
    }

    #[test]
    fn the_ring_wraps_and_a_line_being_appended_is_invisible() {
        let mut r = OutputRing::<16>::new();
        for round in 0..50u8 {
            let line = [b'a' + round % 26; 11];
            let mut a = r.append();
            a.raw(&line);
            assert!(a.commit());
            // Not committed: gone with the `Append`.
            r.append().raw(b"12345");
            let out: Vec<u8> = core::iter::from_fn(|| r.pop()).collect();
            assert_eq!(out, line);
        }
    }
}
