//! `%XX` decoding, shared by the path parser and the `Authorization` parser.

/// Decodes `%XX` escapes (two hex digits, either case); `None` on a malformed escape.
pub(crate) fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let (hi, lo) = (hex(*v.get(i + 1)?)?, hex(*v.get(i + 2)?)?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn strict_escapes() {
        assert_eq!(percent_decode(b"a%2Fb%2fc%20").unwrap(), b"a/b/c ");
        // `u8::from_str_radix` would take "+f" as 15: only hex digits count here.
        for bad in [&b"%+f"[..], b"%", b"%2", b"%zz", b"% 1"] {
            assert_eq!(
                percent_decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
