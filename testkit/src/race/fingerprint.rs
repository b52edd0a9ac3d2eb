//! [`Fingerprint`]: the 128-bit state fingerprints of the model check.

use core::hash::{Hash, Hasher};

/// A 128-bit fingerprint hasher (two multiply-rotate lanes, one pass), for
/// model checkers that keep fingerprints of [`Harness`](super::Harness)
/// states instead of the states (`race_model_check`; the harness
/// fingerprints a kept snapshot once with it). Not cryptographic; a
/// collision would merge two states, at odds of about `states^2 / 2^129`.
///
/// The derived `Hash` impls write one small integer per field (a LAPIC
/// state alone is dozens of `u8`/`u16`/`u32` writes): they are packed into
/// 64-bit words before mixing, one mix per eight bytes. The byte stream of a
/// derived `Hash` is unambiguous for its type (enum discriminants and
/// lengths come first), so packing loses nothing.
#[derive(Clone, Debug)]
pub struct Fingerprint {
    a: u64,
    b: u64,
    /// Bytes written but not mixed yet, low byte first.
    buf: u64,
    /// How many of `buf`'s bytes are used (0..8).
    used: u32,
}

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        if self.used == 0 {
            // Aligned: whole words go straight to the lanes.
            for c in &mut chunks {
                self.word(u64::from_le_bytes(c.try_into().unwrap()));
            }
        }
        for c in &mut chunks {
            self.push(u64::from_le_bytes(c.try_into().unwrap()), 8);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.push(u64::from_le_bytes(w), rest.len() as u32);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.push(i as u64, 1);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.push(i as u64, 2);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.push(i as u64, 4);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.push(i, 8);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.push(i as u64, 8);
    }
    fn finish(&self) -> u64 {
        self.a ^ self.b
    }
}

impl Fingerprint {
    #[inline]
    fn word(&mut self, w: u64) {
        self.a = (self.a ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
        self.b = (self.b.wrapping_add(w) ^ 0xD6E8_FEB8_6659_FD93)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .rotate_left(31);
    }

    /// Appends the low `n` bytes of `x` (`n` in 1..=8, the rest of `x`
    /// zero) to the stream.
    #[inline(always)]
    fn push(&mut self, x: u64, n: u32) {
        let used = self.used;
        self.buf |= x << (8 * used);
        if used + n < 8 {
            self.used = used + n;
            return;
        }
        self.word(self.buf);
        // The bytes of `x` that did not fit (none when it filled `buf`
        // exactly; `8 - used` is 1..=8, so the shift stays below 64 when
        // something is left).
        let left = used + n - 8;
        self.buf = if left == 0 { 0 } else { x >> (8 * (8 - used)) };
        self.used = left;
    }

    /// The fingerprint of `h`.
    pub fn of<T: Hash + ?Sized>(h: &T) -> u128 {
        let mut f = Fingerprint {
            a: 0x243F_6A88_85A3_08D3,
            b: 0x1319_8A2E_0370_7344,
            buf: 0,
            used: 0,
        };
        h.hash(&mut f);
        // The last partial word, with its length.
        f.word(f.buf ^ u64::from(f.used) << 59);
        let (a, b) = (mix(f.a), mix(f.b ^ f.a.rotate_left(17)));
        (a as u128) << 64 | b as u128
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
