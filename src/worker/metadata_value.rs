//! S3 user metadata travels as HTTP headers: only printable ASCII is safe there (a control
//! character makes the request unbuildable, non-ASCII is mangled). Keys are arbitrary UTF-8, so
//! a value that needs it is percent-encoded.

/// `value` as is when it is all printable ASCII; otherwise every byte outside printable ASCII
/// (and `%` itself, so the result decodes unambiguously) as `%XX`.
pub fn metadata_value(value: &str) -> String {
    let printable = |b: u8| (0x20..=0x7e).contains(&b);
    if value.bytes().all(printable) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() * 2);
    for b in value.bytes() {
        if printable(b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_kept_and_the_rest_percent_encoded() {
        assert_eq!(metadata_value("a b/c%d.jpg"), "a b/c%d.jpg");
        assert_eq!(metadata_value("bell\u{7}.jpg"), "bell%07.jpg");
        assert_eq!(metadata_value("tab\there"), "tab%09here");
        assert_eq!(metadata_value("café 100%.jpg"), "caf%C3%A9 100%25.jpg");
        assert_eq!(metadata_value("del\u{7f}"), "del%7F");
    }
}
