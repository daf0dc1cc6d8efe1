//! HTTP/2 prior-knowledge (h2c) payloads: preface, SETTINGS and a HEADERS frame.

use super::hpack;

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types used here.
pub mod frame_type {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// How the `:authority` field is represented (RFC 7541 section 6.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Representation {
    /// Literal with incremental indexing (0x40 | index).
    #[default]
    Incremental,
    /// Literal without indexing (0x00 | index).
    WithoutIndexing,
    /// Literal never indexed (0x10 | index).
    NeverIndexed,
}

/// How to shape the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2Options {
    pub representation: Representation,
    /// Write `:method`, `:scheme`, `:path` before `:authority` (else after it).
    pub pseudo_first: bool,
    /// A WINDOW_UPDATE frame between SETTINGS and HEADERS.
    pub window_update: bool,
    /// Pad the HEADERS frame with this many bytes (PADDED flag).
    pub padding: Option<u8>,
    /// Set the PRIORITY flag (5 more bytes before the block).
    pub priority: bool,
    /// Header fields before `:authority`: (name, value) literals without indexing.
    pub before: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes sent as the Huffman-coded `:authority` value in place of the coding of the
    /// authority given (a coding that is not valid, or not the encoder's).
    pub coded: Option<Vec<u8>>,
}

/// Appends one frame.
pub fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The HPACK header block of a GET with the given authority bytes.
pub fn header_block(authority: &[u8], huffman: bool, options: &H2Options) -> Vec<u8> {
    let mut block = Vec::new();
    let pseudo = |b: &mut Vec<u8>| {
        b.push(0x82); // :method GET
        b.push(0x86); // :scheme http
        b.push(0x84); // :path /
    };
    if options.pseudo_first {
        pseudo(&mut block);
    }
    for (n, v) in &options.before {
        block.push(0x00);
        hpack::encode_string(&mut block, n, false);
        hpack::encode_string(&mut block, v, false);
    }
    let (first, prefix) = match options.representation {
        Representation::Incremental => (0x40, 6),
        Representation::WithoutIndexing => (0x00, 4),
        Representation::NeverIndexed => (0x10, 4),
    };
    hpack::encode_int(&mut block, first, prefix, 1);
    match &options.coded {
        Some(coded) => {
            hpack::encode_int(&mut block, 0x80, 7, coded.len());
            block.extend_from_slice(coded);
        }
        None => hpack::encode_string(&mut block, authority, huffman),
    }
    if !options.pseudo_first {
        pseudo(&mut block);
    }
    block
}

/// Preface, empty SETTINGS and HEADERS (stream 1) with `:authority` raw or Huffman-coded.
pub fn request(authority: &str, huffman: bool) -> Vec<u8> {
    request_with(authority.as_bytes(), huffman, &H2Options::default())
}

/// Like [`request`], shaped by `options`.
pub fn request_with(authority: &[u8], huffman: bool, options: &H2Options) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, frame_type::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    if options.window_update {
        frame(&mut out, frame_type::WINDOW_UPDATE, 0, 0, &[0, 0xef, 0, 1]);
    }
    let block = header_block(authority, huffman, options);
    let mut flags = 0x04 | 0x01; // END_HEADERS | END_STREAM
    let mut payload = Vec::new();
    if let Some(p) = options.padding {
        flags |= 0x08;
        payload.push(p);
    }
    if options.priority {
        flags |= 0x20;
        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
    }
    payload.extend_from_slice(&block);
    if let Some(p) = options.padding {
        payload.extend(std::iter::repeat_n(0, usize::from(p)));
    }
    frame(&mut out, frame_type::HEADERS, flags, 1, &payload);
    out
}

/// A request as curl writes it: the preface, SETTINGS and WINDOW_UPDATE in one segment, the
/// HEADERS frame (`:authority` Huffman-coded) in the next.
pub fn request_in_two(authority: &[u8]) -> [Vec<u8>; 2] {
    let o = H2Options {
        window_update: true,
        ..H2Options::default()
    };
    let mut whole = request_with(authority, true, &o);
    // Preface, SETTINGS (9 + 6), WINDOW_UPDATE (9 + 4).
    let headers = whole.split_off(PREFACE.len() + 15 + 13);
    [whole, headers]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_in_two_splits_before_headers() {
        let [first, second] = request_in_two(b"a.example:8080");
        assert_eq!(
            [first, second].concat(),
            request_with(
                b"a.example:8080",
                true,
                &H2Options {
                    window_update: true,
                    ..H2Options::default()
                }
            )
        );
        let [first, second] = request_in_two(b"a.example");
        assert_eq!(first.len(), 52);
        assert_eq!(second[3], frame_type::HEADERS);
    }

    #[test]
    fn request_layout() {
        let r = request("www.example.com", true);
        assert_eq!(&r[..24], PREFACE);
        // SETTINGS frame of 6 bytes.
        assert_eq!(&r[24..33], &[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        let h = &r[39..];
        assert_eq!(h[3], frame_type::HEADERS);
        let block = &h[9..];
        // 0x41 = incremental, index 1; 0x8c = Huffman, 12 bytes (C.4.1).
        assert_eq!(&block[..2], &[0x41, 0x8c]);
        assert_eq!(
            &block[2..14],
            &hpack::huffman_encode(b"www.example.com")[..]
        );
        let raw = request("a.b", false);
        assert!(raw.ends_with(&[0x41, 3, b'a', b'.', b'b', 0x82, 0x86, 0x84]));
    }
}
