//! TLS ClientHello payloads, produced by a real rustls client and edited on demand.

use std::sync::Arc;

use rustls::pki_types::ServerName;

/// Extension type of server_name.
pub const EXT_SERVER_NAME: u16 = 0;
/// Extension type of Encrypted Client Hello (draft-ietf-tls-esni).
pub const EXT_ECH: u16 = 0xfe0d;

/// Why a ClientHello could not be built or edited.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("not a TLS record holding a whole ClientHello")]
    NotAHello,
    #[error("the ClientHello would exceed a TLS record ({0} bytes)")]
    TooLong(usize),
}

/// How to shape a ClientHello.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelloOptions {
    /// ALPN protocols offered (`h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// Insert an ECH-like outer extension (0xfe0d) at this index of the extension list.
    pub ech_at: Option<usize>,
    /// Further extensions to insert: (index in the list, type, body).
    pub extra: Vec<(usize, u16, Vec<u8>)>,
}

/// A real ClientHello record from rustls, with `sni` as its server_name (none when `None`).
///
/// Names rustls refuses (not a DNS name: upper case kept, odd bytes, over-long) are written
/// into the hello's server_name extension afterwards, so any byte string can be sent.
pub fn client_hello(sni: Option<&str>, options: &HelloOptions) -> Result<Vec<u8>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = options.alpn.clone();
    let dns = sni.and_then(|s| ServerName::try_from(s.to_string()).ok());
    let (name, rewrite) = match (sni, dns) {
        (None, _) => {
            config.enable_sni = false;
            (
                ServerName::try_from("192.0.2.1").expect("an IP literal"),
                false,
            )
        }
        (Some(_), Some(ServerName::DnsName(d))) => (ServerName::DnsName(d), false),
        (Some(_), _) => (
            ServerName::try_from("placeholder.invalid").expect("a DNS name"),
            true,
        ),
    };
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello)
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    // rustls may normalise a name (a trailing dot); the exact bytes asked for are what is sent.
    let current = server_name(&hello)?;
    if let Some(s) = sni {
        if rewrite || current.as_deref() != Some(s.as_bytes()) {
            hello = with_server_name(&hello, Some(s.as_bytes()))?;
        }
    }
    let mut inserts: Vec<(usize, u16, Vec<u8>)> = options.extra.clone();
    if let Some(at) = options.ech_at {
        inserts.push((at, EXT_ECH, ech_outer_body()));
    }
    for (at, ty, body) in inserts {
        hello = insert_extension(&hello, at, ty, &body)?;
    }
    Ok(hello)
}

/// An ECH outer extension body: outer type, HKDF-SHA256/AES-128-GCM, config id, enc, payload.
pub fn ech_outer_body() -> Vec<u8> {
    let mut b = vec![0, 0x00, 0x01, 0x00, 0x01, 0x2a];
    b.extend_from_slice(&32u16.to_be_bytes());
    b.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    b.extend_from_slice(&144u16.to_be_bytes());
    b.extend((0..144u8).map(|i| i.wrapping_mul(13)));
    b
}

/// The parts of a single-record ClientHello: bytes before the extensions, and the extensions.
struct Hello<'a> {
    /// Record header through the compression methods (lengths rewritten on rebuild).
    head: &'a [u8],
    extensions: Vec<(u16, &'a [u8])>,
}

fn parse(record: &[u8]) -> Result<Hello<'_>, TlsError> {
    let bad = || TlsError::NotAHello;
    if record.len() < 9 || record[0] != 0x16 || record[5] != 1 {
        return Err(bad());
    }
    let rec_len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    if record.len() != 5 + rec_len {
        return Err(bad());
    }
    let body = &record[9..];
    let mut at = 34; // version + random
    let sid = usize::from(*body.get(at).ok_or_else(bad)?);
    at += 1 + sid;
    let cs = usize::from(u16::from_be_bytes([
        *body.get(at).ok_or_else(bad)?,
        *body.get(at + 1).ok_or_else(bad)?,
    ]));
    at += 2 + cs;
    let comp = usize::from(*body.get(at).ok_or_else(bad)?);
    at += 1 + comp;
    let head = &record[..9 + at];
    let ext_len = usize::from(u16::from_be_bytes([
        *body.get(at).ok_or_else(bad)?,
        *body.get(at + 1).ok_or_else(bad)?,
    ]));
    let exts = body.get(at + 2..at + 2 + ext_len).ok_or_else(bad)?;
    let mut extensions = Vec::new();
    let mut i = 0;
    while i < exts.len() {
        let h = exts.get(i..i + 4).ok_or_else(bad)?;
        let ty = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        extensions.push((ty, exts.get(i + 4..i + 4 + len).ok_or_else(bad)?));
        i += 4 + len;
    }
    Ok(Hello { head, extensions })
}

fn rebuild(head: &[u8], extensions: &[(u16, Vec<u8>)]) -> Result<Vec<u8>, TlsError> {
    let mut exts = Vec::new();
    for (ty, body) in extensions {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(body.len() as u16).to_be_bytes());
        exts.extend_from_slice(body);
    }
    let mut out = head.to_vec();
    out.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    out.extend_from_slice(&exts);
    let rec_len = out.len() - 5;
    if rec_len > 16384 || exts.len() > 0xffff {
        return Err(TlsError::TooLong(rec_len));
    }
    out[3..5].copy_from_slice(&(rec_len as u16).to_be_bytes());
    let hs_len = (rec_len - 4) as u32;
    out[6..9].copy_from_slice(&hs_len.to_be_bytes()[1..]);
    Ok(out)
}

/// The extension list of a ClientHello record: (type, body) pairs in order.
pub fn extensions(record: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, TlsError> {
    Ok(parse(record)?
        .extensions
        .into_iter()
        .map(|(t, b)| (t, b.to_vec()))
        .collect())
}

/// The host_name of the first server_name extension, if any.
pub fn server_name(record: &[u8]) -> Result<Option<Vec<u8>>, TlsError> {
    let hello = parse(record)?;
    Ok(hello
        .extensions
        .iter()
        .find(|(t, _)| *t == EXT_SERVER_NAME)
        .and_then(|(_, b)| b.get(5..).map(<[u8]>::to_vec)))
}

/// The server_name extension body for one host_name.
pub fn server_name_body(name: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(name.len() + 5);
    b.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    b.push(0);
    b.extend_from_slice(&(name.len() as u16).to_be_bytes());
    b.extend_from_slice(name);
    b
}

/// The hello with its server_name set to `name` (first in the list when added), or removed.
pub fn with_server_name(record: &[u8], name: Option<&[u8]>) -> Result<Vec<u8>, TlsError> {
    let hello = parse(record)?;
    let mut exts: Vec<(u16, Vec<u8>)> = Vec::with_capacity(hello.extensions.len() + 1);
    let mut placed = false;
    for (t, b) in &hello.extensions {
        if *t == EXT_SERVER_NAME {
            if let (Some(n), false) = (name, placed) {
                exts.push((EXT_SERVER_NAME, server_name_body(n)));
                placed = true;
            }
        } else {
            exts.push((*t, b.to_vec()));
        }
    }
    if let (Some(n), false) = (name, placed) {
        exts.insert(0, (EXT_SERVER_NAME, server_name_body(n)));
    }
    rebuild(hello.head, &exts)
}

/// The hello with one more extension at `index` of its list (clamped to the end).
pub fn insert_extension(
    record: &[u8],
    index: usize,
    ext_type: u16,
    body: &[u8],
) -> Result<Vec<u8>, TlsError> {
    let hello = parse(record)?;
    let mut exts: Vec<(u16, Vec<u8>)> = hello
        .extensions
        .iter()
        .map(|(t, b)| (*t, b.to_vec()))
        .collect();
    exts.insert(index.min(exts.len()), (ext_type, body.to_vec()));
    rebuild(hello.head, &exts)
}

/// The hello with its extension list replaced.
pub fn with_extensions(record: &[u8], exts: &[(u16, Vec<u8>)]) -> Result<Vec<u8>, TlsError> {
    rebuild(parse(record)?.head, exts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_hello_carries_the_name() {
        let h = client_hello(Some("api.example.com"), &HelloOptions::default()).unwrap();
        assert_eq!(h[0], 0x16);
        assert_eq!(h[5], 1);
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])) + 5, h.len());
        assert_eq!(
            server_name(&h).unwrap().as_deref(),
            Some(&b"api.example.com"[..])
        );
        let types: Vec<u16> = extensions(&h).unwrap().iter().map(|e| e.0).collect();
        assert!(types.contains(&43), "supported_versions in {types:?}");
    }

    #[test]
    fn no_sni_and_odd_names() {
        let h = client_hello(None, &HelloOptions::default()).unwrap();
        assert_eq!(server_name(&h).unwrap(), None);
        for name in ["API.Example.COM", "trailing.dot.", "under_score.x", "a"] {
            let h = client_hello(Some(name), &HelloOptions::default()).unwrap();
            assert_eq!(server_name(&h).unwrap().as_deref(), Some(name.as_bytes()));
        }
        let long = "a".repeat(300);
        let h = client_hello(Some(&long), &HelloOptions::default()).unwrap();
        assert_eq!(server_name(&h).unwrap().unwrap().len(), 300);
    }

    #[test]
    fn ech_and_extra_extensions_are_inserted() {
        let opts = HelloOptions {
            alpn: vec![b"h2".to_vec()],
            ech_at: Some(0),
            extra: vec![(99, 0x1234, vec![1, 2, 3])],
        };
        let h = client_hello(Some("x.example"), &opts).unwrap();
        let exts = extensions(&h).unwrap();
        assert_eq!(exts[0].0, EXT_ECH);
        assert_eq!(exts.last().unwrap(), &(0x1234, vec![1, 2, 3]));
        assert_eq!(server_name(&h).unwrap().as_deref(), Some(&b"x.example"[..]));
    }
}
