//! Name extraction from first payloads: TLS ClientHello, HTTP/1.x Host, HTTP/2 `:authority`.

use std::borrow::Cow;

use crate::packet::hpack;

/// Longest name matched plus one (names of this length or more are no names).
pub const NAME_LIMIT: usize = 256;
/// Most bytes of a ClientHello followed across segments.
pub const HELLO_LIMIT: usize = 16384;
/// Bytes of a payload read for HTTP/1.x and HTTP/2.
pub const WINDOW: usize = classifier_common::PAYLOAD_WINDOW;

/// What a stream prefix says as a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a ClientHello (or not one that can be inspected).
    NotHello,
    /// Consistent so far; more bytes are needed.
    NeedMore,
    /// The whole hello: its server name, if any, and whether ECH was offered.
    Complete { name: Option<Vec<u8>>, ech: bool },
}

/// Judges the bytes of a client stream from its first byte as a ClientHello.
pub fn client_hello(b: &[u8]) -> Hello {
    let starts = [(0, Some(0x16u8)), (1, Some(3)), (2, None), (5, Some(1))];
    for (at, want) in starts {
        match (b.get(at), want) {
            (Some(&v), Some(w)) if v != w => return Hello::NotHello,
            (Some(&v), None) if v > 4 => return Hello::NotHello,
            _ => {}
        }
    }
    if b.len() < 9 {
        return Hello::NeedMore;
    }
    let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    let hs_len = (usize::from(b[6]) << 16) | (usize::from(b[7]) << 8) | usize::from(b[8]);
    let end = 9 + hs_len;
    if end > HELLO_LIMIT {
        return Hello::NotHello;
    }
    if b.len() < end {
        return Hello::NeedMore;
    }
    if end > 5 + rec_len {
        return Hello::NotHello;
    }
    let h = &b[..end];
    let u8_at = |at: usize| h.get(at).map(|&v| usize::from(v));
    let u16_at = |at: usize| {
        h.get(at..at + 2)
            .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
    };
    let mut off = 9 + 34;
    let Some(sid) = u8_at(off) else {
        return Hello::NotHello;
    };
    off += 1 + sid;
    let Some(cs) = u16_at(off) else {
        return Hello::NotHello;
    };
    off += 2 + cs;
    let Some(comp) = u8_at(off) else {
        return Hello::NotHello;
    };
    off += 1 + comp;
    if off > end {
        return Hello::NotHello;
    }
    if off == end {
        return Hello::Complete {
            name: None,
            ech: false,
        };
    }
    let Some(ext_total) = u16_at(off) else {
        return Hello::NotHello;
    };
    off += 2;
    let ext_end = off + ext_total;
    if ext_end > end {
        return Hello::NotHello;
    }
    let mut ech = false;
    let mut name: Option<Vec<u8>> = None;
    for _ in 0..64 {
        if off + 4 > ext_end {
            break;
        }
        let ty = u16_at(off).unwrap_or(0);
        let len = u16_at(off + 2).unwrap_or(0);
        let body = off + 4;
        off = body + len;
        if off > ext_end {
            return Hello::NotHello;
        }
        if ty == 0xfe0d {
            ech = true;
        } else if ty == 0 && name.is_none() && len >= 5 {
            let nt = h[body + 2];
            let nl = usize::from(u16::from_be_bytes([h[body + 3], h[body + 4]]));
            if nt == 0 && (1..NAME_LIMIT).contains(&nl) && body + 5 + nl <= off {
                name = Some(h[body + 5..body + 5 + nl].to_vec());
            }
        }
    }
    Hello::Complete { name, ech }
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// The Host of an HTTP/1.x request (port stripped, case kept), if the payload is one with a Host.
pub fn http_host(payload: &[u8]) -> Option<&[u8]> {
    let w = &payload[..payload.len().min(WINDOW)];
    if !METHODS.iter().any(|m| w.starts_with(m)) {
        return None;
    }
    let n = w.len();
    let mut value = None;
    for i in 0..n.saturating_sub(1) {
        if w[i] != b'\n' {
            continue;
        }
        let a = w[i + 1];
        if a == b'\r' || a == b'\n' {
            break;
        }
        if i + 6 <= n && w[i + 1..i + 5].eq_ignore_ascii_case(b"host") && w[i + 5] == b':' {
            value = Some(i + 6);
            break;
        }
    }
    let mut start = value?;
    while start < n && (w[start] == b' ' || w[start] == b'\t') {
        start += 1;
    }
    let mut end = start;
    while end < n && w[end] != b'\r' && w[end] != b'\n' {
        end += 1;
    }
    // The line must end inside the window: a value running to its end may go on in bytes not
    // read.
    if end == n {
        return None;
    }
    while end > start && (w[end - 1] == b' ' || w[end - 1] == b'\t') {
        end -= 1;
    }
    if end <= start {
        return None;
    }
    host_of(&w[start..end])
}

/// The host of an authority (`Host`, or a raw `:authority`), its port stripped: `[v6]:port`
/// gives what is inside the brackets, `name:port` the name. `None` when empty or too long.
pub fn host_of(a: &[u8]) -> Option<&[u8]> {
    let h = match a.split_first() {
        Some((b'[', rest)) => rest.split(|&c| c == b']').next().unwrap_or(rest),
        _ => a.split(|&c| c == b':').next().unwrap_or(a),
    };
    (!h.is_empty() && h.len() < NAME_LIMIT).then_some(h)
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HPACK integer with a `bits`-bit prefix at `*pos`, reading no further than `limit`.
fn hpack_int(w: &[u8], limit: usize, pos: &mut usize, bits: u32) -> Option<usize> {
    if *pos >= limit {
        return None;
    }
    let max = (1usize << bits) - 1;
    let mut v = usize::from(w[*pos]) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    for _ in 0..3 {
        if *pos >= limit {
            return None;
        }
        let b = usize::from(w[*pos]);
        *pos += 1;
        v += (b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Most bytes of a frame before the first HEADERS frame that the next segment may still hold.
pub const H2_SKIP_LIMIT: usize = 16384;
/// Most segments of an HTTP/2 stream that may end before its first HEADERS frame.
pub const H2_MAX_SEGMENTS: u8 = 8;

/// What a segment of an HTTP/2 prior-knowledge (h2c) stream says about its `:authority`.
#[derive(Debug, PartialEq, Eq)]
pub enum H2<'a> {
    /// Nothing to match: not such a stream as followed, or no `:authority`.
    Not,
    /// The segment ends before the first HEADERS frame, whose search goes on this many bytes
    /// into the next segment (where the next frame starts).
    More(usize),
    /// The host of the `:authority` value (its port stripped as a Host's), decoded when the
    /// value is Huffman-coded ([`huffman_host`]).
    Authority(Cow<'a, [u8]>),
}

/// The host of the `:authority` of the first HEADERS frame of an h2c stream (see
/// [`h2_segment`]), in a first payload that holds it.
pub fn h2_authority(payload: &[u8]) -> Option<Cow<'_, [u8]>> {
    match h2_segment(payload, None) {
        H2::Authority(host) => Some(host),
        _ => None,
    }
}

/// The host of a Huffman-coded `:authority` value, decoded symbol by symbol as a Host's value
/// is read: a value whose first symbol is `[` keeps what follows up to `]`, any other is cut at
/// its first `:`, and what follows the cut is not decoded. `None` when the coding is invalid
/// before the cut (EOS) or, without a cut, at its end (padding), or when the host is empty or
/// too long.
pub fn huffman_host(coded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bracketed = None;
    for sym in hpack::huffman_symbols(coded) {
        let c = sym.ok()?;
        let b = match bracketed {
            Some(b) => b,
            None => {
                bracketed = Some(c == b'[');
                if c == b'[' {
                    continue;
                }
                false
            }
        };
        if c == if b { b']' } else { b':' } {
            break;
        }
        out.push(c);
        if out.len() >= NAME_LIMIT {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Reads a segment of an h2c stream: its first (`from` `None`: the preface, then frames) or a
/// later one whose next frame starts `from` bytes into it (`from` below its length). Frame
/// headers must lie in the first [`WINDOW`] bytes; at most 8 frames are read. A walk that
/// reaches the segment's end at a frame boundary, or ends inside a frame other than HEADERS,
/// says how far into the next segment the next frame starts.
pub fn h2_segment(payload: &[u8], from: Option<usize>) -> H2<'_> {
    let seg = payload.len();
    let w = &payload[..seg.min(WINDOW)];
    let n = w.len();
    let mut off = match from {
        Some(f) => f,
        None if n < PREFACE.len() || &w[..PREFACE.len()] != PREFACE => return H2::Not,
        None => PREFACE.len(),
    };
    let mut block = None;
    for _ in 0..8 {
        if off == seg {
            return H2::More(0);
        }
        if off + 9 > n {
            return H2::Not;
        }
        let len =
            (usize::from(w[off]) << 16) | (usize::from(w[off + 1]) << 8) | usize::from(w[off + 2]);
        let ty = w[off + 3];
        let flags = w[off + 4];
        let body = off + 9;
        off = body + len;
        if ty != 1 {
            if off > seg {
                let skip = off - seg;
                return if skip > H2_SKIP_LIMIT {
                    H2::Not
                } else {
                    H2::More(skip)
                };
            }
            continue;
        }
        let mut start = body;
        let mut end = off;
        if flags & 0x08 != 0 {
            if start >= n {
                return H2::Not;
            }
            let pad = usize::from(w[start]);
            start += 1;
            if end < start || pad > end - start {
                return H2::Not;
            }
            end -= pad;
        }
        if flags & 0x20 != 0 {
            start += 5;
        }
        block = Some((start, end.min(n)));
        break;
    }
    let Some((mut pos, block_end)) = block else {
        return H2::Not;
    };
    let mut field = || -> Option<Cow<'_, [u8]>> {
        for _ in 0..16 {
            if pos >= block_end {
                return None;
            }
            let b = w[pos];
            let bits = if b & 0x80 != 0 {
                hpack_int(w, block_end, &mut pos, 7)?;
                continue;
            } else if b & 0xc0 == 0x40 {
                6
            } else if b & 0xe0 == 0x20 {
                hpack_int(w, block_end, &mut pos, 5)?;
                continue;
            } else {
                4
            };
            let index = hpack_int(w, block_end, &mut pos, bits)?;
            if index == 0 {
                let nl = hpack_int(w, block_end, &mut pos, 7)?;
                pos += nl;
            }
            if pos >= block_end {
                return None;
            }
            let huffman = w[pos] & 0x80 != 0;
            let vl = hpack_int(w, block_end, &mut pos, 7)?;
            if index == 1 {
                if pos + vl > block_end {
                    return None;
                }
                let v = &w[pos..pos + vl];
                if huffman {
                    return huffman_host(v).map(Cow::Owned);
                }
                return host_of(v).map(Cow::Borrowed);
            }
            pos += vl;
        }
        None
    };
    match field() {
        Some(host) => H2::Authority(host),
        None => H2::Not,
    }
}

/// Lower-cases a name (ASCII) and removes one trailing dot; `None` when nothing is left.
pub fn normalize(name: &[u8]) -> Option<Vec<u8>> {
    if name.is_empty() || name.len() >= NAME_LIMIT {
        return None;
    }
    let mut n = name.to_ascii_lowercase();
    if n.last() == Some(&b'.') {
        n.pop();
    }
    (!n.is_empty()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{h2c, hpack, http, tls};

    #[test]
    fn http_host_rules() {
        let o = http::RequestOptions::default();
        let r = http::request("GET", Some(b"\t Example.com:8080 \t"), &o);
        assert_eq!(http_host(&r), Some(&b"Example.com"[..]));
        let r = http::request("PUT", Some(b"[fd00::1]:80"), &o);
        assert_eq!(http_host(&r), Some(&b"fd00::1"[..]));
        let r = http::request("BREW", Some(b"a.com"), &o);
        assert_eq!(http_host(&r), None);
        // The first Host wins; a Host after the blank line is body.
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nhOST: a\r\nHost: b\r\n\r\n"),
            Some(&b"a"[..])
        );
        assert_eq!(http_host(b"GET / HTTP/1.1\r\n\r\nHost: b\r\n"), None);
        // A space before the colon is another header.
        assert_eq!(
            http_host(b"GET / HTTP/1.1\nHost : a\nHost:b\n"),
            Some(&b"b"[..])
        );
        // A value that runs to the end of what was read may go on in the next segment, or past
        // the window: no name.
        assert_eq!(http_host(b"GET / HTTP/1.1\r\nHost: api.example.com"), None);
        assert_eq!(
            http_host(b"GET / HTTP/1.1\r\nHost: api.example.com  "),
            None
        );
        // The Host line after `pad` bytes: its value at pad + 8, 15 bytes, its CR at pad + 23.
        let line = |pad: usize, host: &[u8]| {
            let mut r = b"GET / HTTP/1.1\r\nX: ".to_vec();
            r.resize(pad, b'x');
            r.extend_from_slice(b"\r\nHost: ");
            r.extend_from_slice(host);
            r.extend_from_slice(b"\r\n\r\n");
            r
        };
        let name = b"api.example.com";
        assert_eq!(http_host(&line(WINDOW - 24, name)), Some(&name[..]));
        assert_eq!(http_host(&line(WINDOW - 23, name)), None);
        assert_eq!(
            http_host(&line(WINDOW - 24, b"api.example.com.evil.test")),
            None
        );
        // Only the first WINDOW bytes are read: a Host line starting inside them is found, one
        // starting after them is not.
        assert_eq!(http_host(&line(WINDOW - 10, b"a")), Some(&b"a"[..]));
        assert_eq!(http_host(&line(WINDOW + 6, b"a")), None);
        assert_eq!(http_host(b"GET / HTTP/1.1\r\nHost: :80\r\n"), None);
    }

    #[test]
    fn h2_authority_rules() {
        let r = h2c::request("www.example.com", true);
        assert_eq!(h2_authority(&r).as_deref(), Some(&b"www.example.com"[..]));
        let o = h2c::H2Options {
            representation: h2c::Representation::NeverIndexed,
            pseudo_first: true,
            window_update: true,
            padding: Some(7),
            priority: true,
            before: vec![(b":authority".to_vec(), b"literal-name.example".to_vec())],
            coded: None,
        };
        let r = h2c::request_with(b"a.example", false, &o);
        assert_eq!(h2_authority(&r).as_deref(), Some(&b"a.example"[..]));
        // Padding longer than the frame: no name.
        let mut bad = h2c::request("a", false);
        let at = 24 + 15; // SETTINGS frame is 9 + 6 bytes
        bad[at + 4] |= 0x08;
        bad[at + 9] = 200;
        assert_eq!(h2_authority(&bad), None);
        assert_eq!(h2_authority(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
    }

    /// A Huffman-coded `:authority` is decoded up to the end of its host, as a Host's value is
    /// cut; the coding must be valid up to there, and to its end when there is no port.
    #[test]
    fn huffman_coded_authority_hosts() {
        let host = |v: &[u8]| huffman_host(&hpack::huffman_encode(v));
        assert_eq!(host(b"Api.Example.com"), Some(b"Api.Example.com".to_vec()));
        assert_eq!(host(b"a.example:8080"), Some(b"a.example".to_vec()));
        assert_eq!(host(b"[fd00::1]:443"), Some(b"fd00::1".to_vec()));
        assert_eq!(host(b"[fd00::1"), Some(b"fd00::1".to_vec()));
        assert_eq!(host(b":8080"), None);
        assert_eq!(host(b"["), None);
        assert_eq!(host(&[b'a'; 255]), Some(vec![b'a'; 255]));
        assert_eq!(host(&[b'a'; 256]), None);
        let mut long = vec![b'a'; 255];
        long.extend_from_slice(b":1");
        assert_eq!(host(&long), Some(vec![b'a'; 255]));
        // Bad padding after the cut is never read; without a cut it makes no name.
        let mut coded = hpack::huffman_encode(b"a.example:80");
        coded.push(0xff);
        assert_eq!(huffman_host(&coded), Some(b"a.example".to_vec()));
        let mut coded = hpack::huffman_encode(b"a.example");
        coded.push(0xff);
        assert_eq!(huffman_host(&coded), None);
        // EOS before the cut: the padding's ones and 32 more.
        let mut coded = hpack::huffman_encode(b"ab");
        coded.extend([0xff, 0xff, 0xff, 0xff]);
        assert_eq!(huffman_host(&coded), None);
    }

    /// A segment of an h2c stream that ends before the HEADERS frame says where the next frame
    /// starts in the next segment; the next segment is read from there.
    #[test]
    fn h2_segments_before_the_headers_frame() {
        let [start, headers] = h2c::request_in_two(b"a.example:8080");
        let whole = [&start[..], &headers[..]].concat();
        let host = H2::Authority(Cow::Borrowed(&b"a.example"[..]));
        // The preface alone, the preface and SETTINGS: the next frame starts the next segment.
        assert_eq!(h2_segment(&whole[..24], None), H2::More(0));
        assert_eq!(h2_segment(&start, None), H2::More(0));
        // Ending inside SETTINGS' body (9 + 6 bytes from 24): the rest is skipped next time.
        assert_eq!(h2_segment(&whole[..35], None), H2::More(4));
        assert_eq!(h2_segment(&whole[35..], Some(4)), host);
        // A frame header cut by the segment's end: not inspectable.
        assert_eq!(h2_segment(&whole[..28], None), H2::Not);
        // A later segment read from the next frame; a value loses its port, raw or coded.
        assert_eq!(h2_segment(&headers, Some(0)), host);
        let raw = h2c::request("b.example:8080", false);
        assert_eq!(
            h2_segment(&raw[39..], Some(0)),
            H2::Authority(Cow::Borrowed(&b"b.example"[..]))
        );
        // A frame that goes on more than 16 KiB into the next segment: not inspectable.
        let mut big = h2c::PREFACE.to_vec();
        big.extend_from_slice(&[0, 0x50, 0, 8, 0, 0, 0, 0, 0]);
        assert_eq!(h2_segment(&big, None), H2::Not);
        big[25] = 0x40;
        assert_eq!(h2_segment(&big, None), H2::More(0x4000));
    }

    #[test]
    fn client_hello_rules() {
        let h = tls::client_hello(Some("a.example"), &tls::HelloOptions::default()).unwrap();
        assert_eq!(
            client_hello(&h),
            Hello::Complete {
                name: Some(b"a.example".to_vec()),
                ech: false
            }
        );
        for cut in 1..h.len() {
            assert_eq!(client_hello(&h[..cut]), Hello::NeedMore, "cut {cut}");
        }
        assert_eq!(client_hello(&[0x16, 0x03, 0x05]), Hello::NotHello);
        assert_eq!(client_hello(&[0x17]), Hello::NotHello);
        // A record shorter than the hello it holds.
        let mut short = h.clone();
        short[4] -= 1;
        assert_eq!(client_hello(&short), Hello::NotHello);
        // A malformed server_name first; the valid one after it gives the name.
        let bad = tls::insert_extension(&h, 0, 0, &[0, 3, 1, 0, 0]).unwrap();
        assert!(
            matches!(client_hello(&bad), Hello::Complete { name: Some(n), .. } if n == b"a.example")
        );
        // ECH after the 64th extension is not read.
        let mut exts = tls::extensions(&h).unwrap();
        while exts.len() < 64 {
            exts.push((0x7a7a, vec![]));
        }
        exts.push((0xfe0d, vec![0; 4]));
        let many = tls::with_extensions(&h, &exts).unwrap();
        assert!(matches!(
            client_hello(&many),
            Hello::Complete { ech: false, .. }
        ));
        assert_eq!(normalize(b"A.B."), Some(b"a.b".to_vec()));
        assert_eq!(normalize(b"."), None);
    }
}
