//! HTTP/1.x request payloads.

/// How to shape an HTTP/1.x request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    pub path: String,
    pub version: String,
    /// Spelling of the Host header's name (`Host`, `host`, `HOST`).
    pub host_header: String,
    /// Headers written before Host.
    pub before: Vec<(String, String)>,
    /// Headers written after Host.
    pub after: Vec<(String, String)>,
    /// End lines with LF alone instead of CRLF.
    pub lf_only: bool,
    pub body: Vec<u8>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            path: "/".into(),
            version: "HTTP/1.1".into(),
            host_header: "Host".into(),
            before: Vec::new(),
            after: vec![
                ("User-Agent".into(), "meshclass-test/1".into()),
                ("Accept".into(), "*/*".into()),
            ],
            lf_only: false,
            body: Vec::new(),
        }
    }
}

/// A request with `Host: <host_header_value>` (no Host header when `None`).
pub fn request(
    method: &str,
    host_header_value: Option<&[u8]>,
    options: &RequestOptions,
) -> Vec<u8> {
    let eol: &[u8] = if options.lf_only { b"\n" } else { b"\r\n" };
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(options.path.as_bytes());
    out.push(b' ');
    out.extend_from_slice(options.version.as_bytes());
    out.extend_from_slice(eol);
    let header = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(eol);
    };
    for (n, v) in &options.before {
        header(&mut out, n.as_bytes(), v.as_bytes());
    }
    if let Some(host) = host_header_value {
        header(&mut out, options.host_header.as_bytes(), host);
    }
    for (n, v) in &options.after {
        header(&mut out, n.as_bytes(), v.as_bytes());
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(&options.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_get() {
        let r = request("GET", Some(b"example.com:8080"), &RequestOptions::default());
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("GET / HTTP/1.1\r\nHost: example.com:8080\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }
}
