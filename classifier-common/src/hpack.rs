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

    #[test]
    fn the_code_is_complete_and_its_tree_has_256_inner_nodes() {
        // Kraft's sum of a complete prefix code is exactly 1.
        let sum: u64 = HUFFMAN_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(sum, 1 << 30);
        let tree = huffman_tree();
        assert!(
            tree.iter().all(|c| c[0] != 0 && c[1] != 0),
            "a child is missing"
        );
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
        let mut coded = encode(b"ab");
        // A whole byte of padding (eight ones) is too long.
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
