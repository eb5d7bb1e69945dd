//! The hash values fingerprints are made of: the PDQ hash with its eight rotations/flips,
//! and the local feature descriptor. Plain values below [`crate::domain`], which is built
//! from them, and [`crate::fingerprint`], which computes them (and re-exports them under
//! `fingerprint::pdq` and `fingerprint::local`, where they were first defined).

/// 256-bit PDQ hash. Bytes are in the order of the reference's 64-char lowercase hex string.
///
/// The reference numbers bits 0..255 with bit `k` set when DCT coefficient
/// `(k / 16, k % 16)` exceeds the median, and prints the hash as one 256-bit
/// big-endian number; so bit `k` lives in byte `31 - k / 8`, bit `k % 8`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PdqHash(pub [u8; 32]);

impl PdqHash {
    /// 64 lowercase hex chars, byte-for-byte what the reference tools print,
    /// so hashes can be exchanged with other PDQ implementations.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for &b in &self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0x0f) as usize] as char);
        }
        s
    }

    /// Parses exactly 64 hex digits (either case); anything else is `None`
    /// rather than a best-effort guess, since a truncated hash would match wrongly.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
        }
        Some(PdqHash(out))
    }

    /// Big-endian `u64` chunks of the bytes, so a Hamming index can popcount
    /// four machine words; `words()[0]` holds the first 16 hex chars.
    pub fn words(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        for (i, chunk) in self.0.chunks_exact(8).enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            w[i] = u64::from_be_bytes(a);
        }
        w
    }

    /// Hamming distance (number of differing bits, 0..=256).
    pub fn distance(&self, other: &PdqHash) -> u32 {
        self.words()
            .iter()
            .zip(other.words().iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    pub(crate) fn set_bit(&mut self, k: usize) {
        self.0[31 - k / 8] |= 1 << (k % 8);
    }
}

/// The eight dihedral transforms, in a fixed documented order.
///
/// The order (and the meaning of each name) follows the reference's
/// `pdqDihedralHash256esFromFloatLuma` outputs: index `i` of
/// [`pdq_dihedral`](crate::fingerprint::pdq::pdq_dihedral)'s array is the hash of the image transformed by `ALL[i]`.
/// `Rotate90` is a 90° counter-clockwise turn (`image`'s `rotate270`),
/// `FlipX` mirrors top-to-bottom, `FlipY` left-to-right, `FlipPlus1` is the
/// plain transpose and `FlipMinus1` the anti-transpose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dihedral {
    Original,
    Rotate90,
    Rotate180,
    Rotate270,
    FlipX,
    FlipY,
    FlipPlus1,
    FlipMinus1,
}

impl Dihedral {
    /// All transforms in the order used by
    /// [`pdq_dihedral`](crate::fingerprint::pdq::pdq_dihedral).
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];

    /// Stable snake_case name, for logs and stored match metadata.
    pub fn name(self) -> &'static str {
        match self {
            Dihedral::Original => "original",
            Dihedral::Rotate90 => "rotate90",
            Dihedral::Rotate180 => "rotate180",
            Dihedral::Rotate270 => "rotate270",
            Dihedral::FlipX => "flip_x",
            Dihedral::FlipY => "flip_y",
            Dihedral::FlipPlus1 => "flip_plus1",
            Dihedral::FlipMinus1 => "flip_minus1",
        }
    }
}

/// One corner and its 256-bit BRIEF descriptor (see [`crate::fingerprint::local`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Position in the level's pixels.
    pub x: u16,
    pub y: u16,
    /// Level index (0: [`CHECK_SIDE`](crate::fingerprint::local::CHECK_SIDE)).
    pub level: u8,
    pub bits: [u64; 4],
}

/// Luma cells per side of an [`Appearance`].
pub const APPEARANCE_SIDE: usize = 32;
/// Bytes of one encoded [`Appearance`]: luma (32x32), then Cb and Cr (16x16 each).
pub const APPEARANCE_BYTES: usize =
    APPEARANCE_SIDE * APPEARANCE_SIDE + 2 * (APPEARANCE_SIDE / 2) * (APPEARANCE_SIDE / 2);

/// A picture's appearance (see [`crate::fingerprint::appearance`], which computes and
/// compares it) and the detail it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Appearance {
    /// Y (32x32), Cb (16x16), Cr (16x16), full-range BT.601, row-major.
    pub cells: Box<[u8; APPEARANCE_BYTES]>,
    /// The picture's shorter side at the scale its detail really has, in pixels (see
    /// [`crate::fingerprint::appearance::effective_side`]): a thumbnail scaled up 8x still
    /// says 60.
    pub effective_side: u16,
}

impl std::fmt::Debug for Appearance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appearance")
            .field("digest", &xxhash_rust::xxh3::xxh3_64(&self.cells[..]))
            .field("effective_side", &self.effective_side)
            .finish()
    }
}
