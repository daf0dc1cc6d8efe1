//! HPACK (RFC 7541) pieces: the static Huffman code of Appendix B and integer/string literals.

use classifier_common::hpack::{huffman_codes, HUFFMAN_EOS, HUFFMAN_LENGTHS};

/// The code of every symbol, built once from the lengths of the canonical code.
fn codes() -> &'static [u32; 257] {
    static CODES: std::sync::OnceLock<[u32; 257]> = std::sync::OnceLock::new();
    CODES.get_or_init(huffman_codes)
}

/// The Huffman code and its length in bits of a symbol (256 is EOS).
pub fn code(symbol: u16) -> (u32, u8) {
    let s = usize::from(symbol);
    (codes()[s], HUFFMAN_LENGTHS[s])
}

/// Encodes bytes with the HPACK static Huffman code, padded with the EOS prefix (ones).
pub fn huffman_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let (c, l) = code(u16::from(b));
        acc = (acc << l) | u64::from(c);
        bits += u32::from(l);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
    out
}

/// Length in bytes of the Huffman coding of `input`.
pub fn huffman_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&b| usize::from(code(u16::from(b)).1))
        .sum();
    bits.div_ceil(8)
}

/// Decodes an HPACK Huffman string; `None` when it is not a valid coding (EOS, bad padding).
pub fn huffman_decode(input: &[u8]) -> Option<Vec<u8>> {
    huffman_symbols(input).collect::<Result<Vec<u8>, _>>().ok()
}

/// The symbols of an HPACK Huffman string one by one, read bit by bit: each `Ok(symbol)` in
/// turn, then, at the end of the input, an `Err` if the string holds EOS or its padding is not
/// at most seven ones (a prefix of EOS), else nothing more. A reader may stop early, before the
/// coding is known to be valid to its end.
pub fn huffman_symbols(input: &[u8]) -> HuffmanSymbols<'_> {
    HuffmanSymbols {
        input,
        bit: 0,
        failed: false,
    }
}

/// See [`huffman_symbols`].
pub struct HuffmanSymbols<'a> {
    input: &'a [u8],
    bit: usize,
    failed: bool,
}

impl Iterator for HuffmanSymbols<'_> {
    type Item = Result<u8, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let total = self.input.len() * 8;
        let (mut acc, mut bits) = (0u32, 0u8);
        while self.bit < total {
            let b = self.input[self.bit / 8] >> (7 - self.bit % 8) & 1;
            self.bit += 1;
            acc = acc << 1 | u32::from(b);
            bits += 1;
            if let Some(sym) = lookup(acc, bits) {
                if sym == HUFFMAN_EOS {
                    self.failed = true;
                    return Some(Err(()));
                }
                return Some(Ok(sym as u8));
            }
        }
        // The end: what is left must be a valid padding.
        if bits > 7 || acc != (1u32 << bits) - 1 {
            self.failed = true;
            return Some(Err(()));
        }
        None
    }
}

/// The symbol whose code is `acc` of `bits` bits, if any.
fn lookup(acc: u32, bits: u8) -> Option<u16> {
    // Canonical code: the codes of one length are consecutive, in symbol order, from the
    // first code of that length.
    struct Lengths {
        /// By length: its first code, and where its symbols start in `symbols`.
        first: [(u32, usize); 31],
        /// The symbols ordered by (length, symbol).
        symbols: Vec<u16>,
    }
    static LENGTHS: std::sync::OnceLock<Lengths> = std::sync::OnceLock::new();
    let t = LENGTHS.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..257).collect();
        symbols.sort_by_key(|&s| (HUFFMAN_LENGTHS[usize::from(s)], s));
        let mut first = [(u32::MAX, 0); 31];
        for (i, &s) in symbols.iter().enumerate().rev() {
            first[usize::from(HUFFMAN_LENGTHS[usize::from(s)])] = (codes()[usize::from(s)], i);
        }
        Lengths { first, symbols }
    });
    let (code, at) = *t.first.get(usize::from(bits))?;
    let i = at + acc.checked_sub(code)? as usize;
    let sym = *t.symbols.get(i)?;
    (HUFFMAN_LENGTHS[usize::from(sym)] == bits).then_some(sym)
}

/// Appends an HPACK integer with an `n`-bit prefix; `first` holds the bits above the prefix.
pub fn encode_int(out: &mut Vec<u8>, first: u8, n: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut v = value - max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Appends an HPACK string literal, raw or Huffman-coded.
pub fn encode_string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let coded = huffman_encode(s);
        encode_int(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        encode_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn codes_match_rfc_7541_appendix_b() {
        assert_eq!(code(0), (0x1ff8, 13));
        assert_eq!(code(1), (0x7f_ffd8, 23));
        assert_eq!(code(10), (0x3fff_fffc, 30));
        assert_eq!(code(u16::from(b' ')), (0x14, 6));
        assert_eq!(code(u16::from(b'0')), (0x0, 5));
        assert_eq!(code(u16::from(b'z')), (0x7b, 7));
        assert_eq!(code(u16::from(b'\\')), (0x7fff0, 19));
        assert_eq!(code(127), (0xfff_fffc, 28));
        assert_eq!(code(199), (0x1ff_ffec, 25));
        assert_eq!(code(255), (0x3ff_ffee, 26));
        assert_eq!(code(256), (0x3fff_ffff, 30));
    }

    #[test]
    fn rfc_7541_examples_encode() {
        // C.4.1, C.4.2, C.4.3 and C.6.1.
        assert_eq!(
            huffman_encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
        assert_eq!(huffman_encode(b"no-cache"), hex("a8eb 1064 9cbf"));
        assert_eq!(huffman_encode(b"custom-key"), hex("25a8 49e9 5ba9 7d7f"));
        assert_eq!(
            huffman_encode(b"custom-value"),
            hex("25a8 49e9 5bb8 e8b4 bf")
        );
        assert_eq!(huffman_encode(b"302"), hex("6402"));
        assert_eq!(huffman_encode(b"private"), hex("aec3 771a 4b"));
        assert_eq!(
            huffman_encode(b"Mon, 21 Oct 2013 20:13:21 GMT"),
            hex("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff")
        );
        assert_eq!(
            huffman_encode(b"https://www.example.com"),
            hex("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3")
        );
    }

    #[test]
    fn decode_inverts_encode_for_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman_decode(&huffman_encode(&all)), Some(all.clone()));
        for b in 0..=255u8 {
            let one = [b, b'a', b];
            assert_eq!(
                huffman_decode(&huffman_encode(&one)).as_deref(),
                Some(&one[..])
            );
            assert_eq!(huffman_len(&one), huffman_encode(&one).len());
        }
        // Padding of zeros is not valid, nor EOS, nor eight bits of padding.
        assert_eq!(huffman_decode(&[0x00]), None);
        assert_eq!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc]), None);
        assert_eq!(huffman_decode(&[0x1f]).as_deref(), Some(&b"a"[..]));
        assert_eq!(huffman_decode(&[0x1f, 0xff]), None);
        // A reader that stops early never sees what follows.
        let mut coded = huffman_encode(b"ab:");
        coded.extend([0xff, 0xff, 0xff, 0xfc]);
        let head: Vec<_> = huffman_symbols(&coded).take(3).collect();
        assert_eq!(head, [Ok(b'a'), Ok(b'b'), Ok(b':')]);
    }

    #[test]
    fn integers_use_the_prefix_then_continuation_bytes() {
        // C.1.1 - C.1.3.
        let mut v = Vec::new();
        encode_int(&mut v, 0, 5, 10);
        assert_eq!(v, [10]);
        v.clear();
        encode_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]);
        v.clear();
        encode_int(&mut v, 0, 8, 42);
        assert_eq!(v, [42]);
    }
}
