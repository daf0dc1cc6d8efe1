//! The HPACK static Huffman code (RFC 7541 Appendix B), and the decoder table the TC program
//! decodes an HTTP/2 `:authority` with: a machine that reads a coded string four bits at a
//! time (docs/decision.md §6).

/// Code length in bits of every symbol (0..=255, then EOS at 256), from RFC 7541 Appendix B.
///
/// The code is canonical: codes of one length are consecutive in symbol order, and each length
/// starts where the previous one ended, shifted left; [`huffman_codes`] rebuilds the codes from
/// this.
pub const HUFFMAN_LENGTHS: [u8; 257] = [
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

/// The EOS symbol, which a coded string must never contain.
pub const HUFFMAN_EOS: u16 = 256;

/// The code of every symbol (right-aligned in `HUFFMAN_LENGTHS[symbol]` bits), rebuilt from
/// the lengths of the canonical code.
pub const fn huffman_codes() -> [u32; 257] {
    let mut codes = [0u32; 257];
    let mut next: u32 = 0;
    let mut len = 1u8;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if HUFFMAN_LENGTHS[sym] == len {
                codes[sym] = next;
                next += 1;
            }
            sym += 1;
        }
        next <<= 1;
        len += 1;
    }
    codes
}

/// Entries of [`HUFFMAN_DFA`]: the state after the nibble in bits 0-7, the symbol it completes
/// in bits 8-15 when [`DFA_EMIT`] is set.
pub const DFA_STATE: u32 = 0xff;
/// The nibble completes a symbol (at most one: every code is at least five bits long).
pub const DFA_EMIT: u32 = 1 << 16;
/// The nibble completes EOS: the coding is invalid.
pub const DFA_FAIL: u32 = 1 << 17;
/// The string may end after this nibble: the bits read since the last symbol are at most
/// seven ones, a valid padding (a prefix of EOS).
pub const DFA_ACCEPT: u32 = 1 << 18;

/// The decoder: `HUFFMAN_DFA[state << 4 | nibble]`, the state being an inner node of the code's
/// tree (256 of them, for 257 symbols; 0 is the root, where a string starts), the nibbles read
/// high first.
pub static HUFFMAN_DFA: [u32; 4096] = huffman_dfa();

/// A child in [`huffman_tree`]: a leaf holds `LEAF | symbol`, an inner node its index.
const LEAF: u16 = 0x8000;

/// The code's tree: `[child 0, child 1]` of each inner node, the root first.
const fn huffman_tree() -> [[u16; 2]; 256] {
    let codes = huffman_codes();
    let mut tree = [[0u16; 2]; 256];
    let mut nodes = 1usize;
    let mut sym = 0usize;
    while sym < 257 {
        let (code, len) = (codes[sym], HUFFMAN_LENGTHS[sym] as u32);
        let mut node = 0usize;
        let mut bit = len;
        while bit > 1 {
            bit -= 1;
            let b = ((code >> bit) & 1) as usize;
            if tree[node][b] == 0 {
                tree[node][b] = nodes as u16;
                nodes += 1;
            }
            node = tree[node][b] as usize;
        }
        tree[node][(code & 1) as usize] = LEAF | sym as u16;
        sym += 1;
    }
    tree
}

const fn huffman_dfa() -> [u32; 4096] {
    let tree = huffman_tree();
    // The accepting states: the root and the inner nodes reached by one to seven ones.
    let mut accept = [false; 256];
    accept[0] = true;
    let mut node = 0usize;
    let mut d = 0;
    while d < 7 {
        node = tree[node][1] as usize;
        accept[node] = true;
        d += 1;
    }
    let mut dfa = [0u32; 4096];
    let mut state = 0usize;
    while state < 256 {
        let mut nibble = 0usize;
        while nibble < 16 {
            let mut node = state;
            let mut out = 0u32;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let c = tree[node][(nibble >> bit) & 1];
                if c & LEAF != 0 {
                    // At most one symbol a nibble: every code is five bits or more.
                    assert!(out == 0, "two symbols in one nibble");
                    let sym = (c & !LEAF) as u32;
                    out = if sym == HUFFMAN_EOS as u32 {
                        DFA_FAIL
                    } else {
                        DFA_EMIT | sym << 8
                    };
                    node = 0;
                } else {
                    node = c as usize;
                }
            }
            if out & DFA_FAIL == 0 && accept[node] {
                out |= DFA_ACCEPT;
            }
            dfa[state << 4 | nibble] = out | node as u32;
            nibble += 1;
        }
        state += 1;
    }
    dfa
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// Codes a string the plain way: each symbol's code in turn, padded with ones.
    fn encode(input: &[u8]) -> Vec<u8> {
        let codes = huffman_codes();
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &b in input {
            let l = HUFFMAN_LENGTHS[b as usize] as u32;
            acc = acc << l | codes[b as usize] as u64;
            bits += l;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push((acc << (8 - bits) | ((1 << (8 - bits)) - 1)) as u8);
        }
        out
    }

    /// Runs the machine over `coded`: the symbols, or `None` for an invalid coding.
    fn run(coded: &[u8]) -> Option<Vec<u8>> {
        let (mut state, mut accept, mut out) = (0u32, true, Vec::new());
        for &b in coded {
            for nibble in [b >> 4, b & 15] {
                let e = HUFFMAN_DFA[(state << 4 | nibble as u32) as usize];
                if e & DFA_FAIL != 0 {
                    return None;
                }
                if e & DFA_EMIT != 0 {
                    out.push((e >> 8) as u8);
                }
                state = e & DFA_STATE;
                accept = e & DFA_ACCEPT != 0;
            }
        }
        accept.then_some(out)
    }

    /// RFC 7541 Appendix B, as printed there: (code, length in bits) of each symbol, EOS last.
    const APPENDIX_B: [(u32, u8); 257] = [
        (0x1ff8, 13),
        (0x7fffd8, 23),
        (0xfffffe2, 28),
        (0xfffffe3, 28),
        (0xfffffe4, 28),
        (0xfffffe5, 28),
        (0xfffffe6, 28),
        (0xfffffe7, 28),
        (0xfffffe8, 28),
        (0xffffea, 24),
        (0x3ffffffc, 30),
        (0xfffffe9, 28),
        (0xfffffea, 28),
        (0x3ffffffd, 30),
        (0xfffffeb, 28),
        (0xfffffec, 28),
        (0xfffffed, 28),
        (0xfffffee, 28),
        (0xfffffef, 28),
        (0xffffff0, 28),
        (0xffffff1, 28),
        (0xffffff2, 28),
        (0x3ffffffe, 30),
        (0xffffff3, 28),
        (0xffffff4, 28),
        (0xffffff5, 28),
        (0xffffff6, 28),
        (0xffffff7, 28),
        (0xffffff8, 28),
        (0xffffff9, 28),
        (0xffffffa, 28),
        (0xffffffb, 28),
        (0x14, 6),
        (0x3f8, 10),
        (0x3f9, 10),
        (0xffa, 12),
        (0x1ff9, 13),
        (0x15, 6),
        (0xf8, 8),
        (0x7fa, 11),
        (0x3fa, 10),
        (0x3fb, 10),
        (0xf9, 8),
        (0x7fb, 11),
        (0xfa, 8),
        (0x16, 6),
        (0x17, 6),
        (0x18, 6),
        (0x0, 5),
        (0x1, 5),
        (0x2, 5),
        (0x19, 6),
        (0x1a, 6),
        (0x1b, 6),
        (0x1c, 6),
        (0x1d, 6),
        (0x1e, 6),
        (0x1f, 6),
        (0x5c, 7),
        (0xfb, 8),
        (0x7ffc, 15),
        (0x20, 6),
        (0xffb, 12),
        (0x3fc, 10),
        (0x1ffa, 13),
        (0x21, 6),
        (0x5d, 7),
        (0x5e, 7),
        (0x5f, 7),
        (0x60, 7),
        (0x61, 7),
        (0x62, 7),
        (0x63, 7),
        (0x64, 7),
        (0x65, 7),
        (0x66, 7),
        (0x67, 7),
        (0x68, 7),
        (0x69, 7),
        (0x6a, 7),
        (0x6b, 7),
        (0x6c, 7),
        (0x6d, 7),
        (0x6e, 7),
        (0x6f, 7),
        (0x70, 7),
        (0x71, 7),
        (0x72, 7),
        (0xfc, 8),
        (0x73, 7),
        (0xfd, 8),
        (0x1ffb, 13),
        (0x7fff0, 19),
        (0x1ffc, 13),
        (0x3ffc, 14),
        (0x22, 6),
        (0x7ffd, 15),
        (0x3, 5),
        (0x23, 6),
        (0x4, 5),
        (0x24, 6),
        (0x5, 5),
        (0x25, 6),
        (0x26, 6),
        (0x27, 6),
        (0x6, 5),
        (0x74, 7),
        (0x75, 7),
        (0x28, 6),
        (0x29, 6),
        (0x2a, 6),
        (0x7, 5),
        (0x2b, 6),
        (0x76, 7),
        (0x2c, 6),
        (0x8, 5),
        (0x9, 5),
        (0x2d, 6),
        (0x77, 7),
        (0x78, 7),
        (0x79, 7),
        (0x7a, 7),
        (0x7b, 7),
        (0x7ffe, 15),
        (0x7fc, 11),
        (0x3ffd, 14),
        (0x1ffd, 13),
        (0xffffffc, 28),
        (0xfffe6, 20),
        (0x3fffd2, 22),
        (0xfffe7, 20),
        (0xfffe8, 20),
        (0x3fffd3, 22),
        (0x3fffd4, 22),
        (0x3fffd5, 22),
        (0x7fffd9, 23),
        (0x3fffd6, 22),
        (0x7fffda, 23),
        (0x7fffdb, 23),
        (0x7fffdc, 23),
        (0x7fffdd, 23),
        (0x7fffde, 23),
        (0xffffeb, 24),
        (0x7fffdf, 23),
        (0xffffec, 24),
        (0xffffed, 24),
        (0x3fffd7, 22),
        (0x7fffe0, 23),
        (0xffffee, 24),
        (0x7fffe1, 23),
        (0x7fffe2, 23),
        (0x7fffe3, 23),
        (0x7fffe4, 23),
        (0x1fffdc, 21),
        (0x3fffd8, 22),
        (0x7fffe5, 23),
        (0x3fffd9, 22),
        (0x7fffe6, 23),
        (0x7fffe7, 23),
        (0xffffef, 24),
        (0x3fffda, 22),
        (0x1fffdd, 21),
        (0xfffe9, 20),
        (0x3fffdb, 22),
        (0x3fffdc, 22),
        (0x7fffe8, 23),
        (0x7fffe9, 23),
        (0x1fffde, 21),
        (0x7fffea, 23),
        (0x3fffdd, 22),
        (0x3fffde, 22),
        (0xfffff0, 24),
        (0x1fffdf, 21),
        (0x3fffdf, 22),
        (0x7fffeb, 23),
        (0x7fffec, 23),
        (0x1fffe0, 21),
        (0x1fffe1, 21),
        (0x3fffe0, 22),
        (0x1fffe2, 21),
        (0x7fffed, 23),
        (0x3fffe1, 22),
        (0x7fffee, 23),
        (0x7fffef, 23),
        (0xfffea, 20),
        (0x3fffe2, 22),
        (0x3fffe3, 22),
        (0x3fffe4, 22),
        (0x7ffff0, 23),
        (0x3fffe5, 22),
        (0x3fffe6, 22),
        (0x7ffff1, 23),
        (0x3ffffe0, 26),
        (0x3ffffe1, 26),
        (0xfffeb, 20),
        (0x7fff1, 19),
        (0x3fffe7, 22),
        (0x7ffff2, 23),
        (0x3fffe8, 22),
        (0x1ffffec, 25),
        (0x3ffffe2, 26),
        (0x3ffffe3, 26),
        (0x3ffffe4, 26),
        (0x7ffffde, 27),
        (0x7ffffdf, 27),
        (0x3ffffe5, 26),
        (0xfffff1, 24),
        (0x1ffffed, 25),
        (0x7fff2, 19),
        (0x1fffe3, 21),
        (0x3ffffe6, 26),
        (0x7ffffe0, 27),
        (0x7ffffe1, 27),
        (0x3ffffe7, 26),
        (0x7ffffe2, 27),
        (0xfffff2, 24),
        (0x1fffe4, 21),
        (0x1fffe5, 21),
        (0x3ffffe8, 26),
        (0x3ffffe9, 26),
        (0xffffffd, 28),
        (0x7ffffe3, 27),
        (0x7ffffe4, 27),
        (0x7ffffe5, 27),
        (0xfffec, 20),
        (0xfffff3, 24),
        (0xfffed, 20),
        (0x1fffe6, 21),
        (0x3fffe9, 22),
        (0x1fffe7, 21),
        (0x1fffe8, 21),
        (0x7ffff3, 23),
        (0x3fffea, 22),
        (0x3fffeb, 22),
        (0x1ffffee, 25),
        (0x1ffffef, 25),
        (0xfffff4, 24),
        (0xfffff5, 24),
        (0x3ffffea, 26),
        (0x7ffff4, 23),
        (0x3ffffeb, 26),
        (0x7ffffe6, 27),
        (0x3ffffec, 26),
        (0x3ffffed, 26),
        (0x7ffffe7, 27),
        (0x7ffffe8, 27),
        (0x7ffffe9, 27),
        (0x7ffffea, 27),
        (0x7ffffeb, 27),
        (0xffffffe, 28),
        (0x7ffffec, 27),
        (0x7ffffed, 27),
        (0x7ffffee, 27),
        (0x7ffffef, 27),
        (0x7fffff0, 27),
        (0x3ffffee, 26),
        (0x3fffffff, 30),
    ];

    #[test]
    fn the_codes_are_those_of_rfc_7541_appendix_b() {
        let codes = huffman_codes();
        for (sym, &(code, len)) in APPENDIX_B.iter().enumerate() {
            assert_eq!(
                (codes[sym], HUFFMAN_LENGTHS[sym]),
                (code, len),
                "symbol {sym}"
            );
        }
    }

    #[test]
    fn the_code_is_complete_and_its_tree_has_256_inner_nodes() {
        // Kraft's sum of a complete prefix code is exactly 1.
        let sum: u64 = HUFFMAN_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(sum, 1 << 30);
        // Every inner node but the root is the child of one, and has two children.
        let tree = huffman_tree();
        assert!(
            tree.iter().all(|c| c[0] != 0 && c[1] != 0),
            "a child is missing"
        );
        let mut inner: Vec<u16> = tree
            .iter()
            .flatten()
            .filter(|&&c| c & LEAF == 0)
            .copied()
            .collect();
        inner.sort_unstable();
        assert_eq!(inner, (1..256).collect::<Vec<u16>>());
    }

    #[test]
    fn the_machine_decodes_every_symbol_and_rfc_7541_examples() {
        for b in 0..=255u8 {
            for s in [[b].as_slice(), &[b, b'a', b], &[b'.', b, b'z', b'0']] {
                assert_eq!(run(&encode(s)).as_deref(), Some(s), "{s:?}");
            }
        }
        // RFC 7541 C.4.1: "www.example.com".
        let coded = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(encode(b"www.example.com"), coded);
        assert_eq!(run(&coded).as_deref(), Some(&b"www.example.com"[..]));
    }

    #[test]
    fn the_machine_rejects_eos_and_bad_padding() {
        // Padding of eight ones ("0", "9", "a" take 5 + 6 + 5 bits: a whole number of bytes)
        // or more is too long.
        let mut coded = encode(b"09a");
        assert_eq!(coded.len(), 2);
        coded.push(0xff);
        assert_eq!(run(&coded), None);
        let mut coded = encode(b"ab");
        coded.push(0xff);
        assert_eq!(run(&coded), None);
        // EOS (thirty ones) inside the string.
        assert_eq!(run(&[0xff, 0xff, 0xff, 0xfc]), None);
        // Padding with a zero bit: 'a' is 00011, then 110 is not a prefix of EOS.
        assert_eq!(run(&[0b0001_1110]), None);
        assert_eq!(run(&[0b0001_1111]).as_deref(), Some(&b"a"[..]));
        assert_eq!(run(&[]).as_deref(), Some(&b""[..]));
    }
}
