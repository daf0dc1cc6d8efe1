//! HPACK (RFC 7541) pieces: the static Huffman code of Appendix B and integer/string literals.

/// Code length in bits of every symbol (0..=255, then EOS at 256), from RFC 7541 Appendix B.
///
/// The code is canonical: codes of one length are consecutive in symbol order, and each length
/// starts where the previous one ended, shifted left; [`code`] rebuilds the codes from this.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..16
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..32
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' '..'/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0'..'?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@'..'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P'..'_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`'..'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p'..127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..144
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..160
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..176
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..192
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..208
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..224
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..240
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..256
    30, // EOS
];

/// The (code, length) table, built once from [`LENGTHS`].
fn table() -> &'static [(u32, u8); 257] {
    static TABLE: std::sync::OnceLock<[(u32, u8); 257]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [(0u32, 0u8); 257];
        let mut next: u32 = 0;
        for len in 1..=30u8 {
            for (sym, &l) in LENGTHS.iter().enumerate() {
                if l == len {
                    table[sym] = (next, len);
                    next += 1;
                }
            }
            next <<= 1;
        }
        table
    })
}

/// The Huffman code and its length in bits of a symbol (256 is EOS).
pub fn code(symbol: u16) -> (u32, u8) {
    table()[usize::from(symbol)]
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
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut acc: u32 = 0;
    let mut bits: u8 = 0;
    for &byte in input {
        for i in (0..8).rev() {
            acc = (acc << 1) | u32::from((byte >> i) & 1);
            bits += 1;
            if bits > 30 {
                return None;
            }
            if let Some(sym) = lookup(acc, bits) {
                if sym == 256 {
                    return None;
                }
                out.push(sym as u8);
                acc = 0;
                bits = 0;
            }
        }
    }
    // Padding: at most 7 bits, all ones (a prefix of EOS).
    if bits > 7 || acc != (1u32 << bits) - 1 {
        return None;
    }
    Some(out)
}

/// The symbol whose code is `acc` of `bits` bits, if any.
fn lookup(acc: u32, bits: u8) -> Option<u16> {
    // Canonical code: the codes of one length form a consecutive range.
    let t = table();
    (0..257u16).find(|&s| t[usize::from(s)] == (acc, bits))
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
    fn the_code_is_prefix_free_and_complete() {
        // Kraft sum of a complete prefix code is exactly 1.
        let sum: u64 = LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(sum, 1 << 30);
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
        // Padding of zeros is not valid.
        assert_eq!(huffman_decode(&[0x00]), None);
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
