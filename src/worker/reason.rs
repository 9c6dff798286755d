//! The `error_reason` put on a dead-lettered message: bounded (SQS attributes are kept under
//! [`MAX_REASON_BYTES`]) without losing its cause, which comes last ("s3://b/<key>: s3 GetObject
//! …: NoSuchKey"). What is too long is the key, so the key is cut in its middle, with a mark
//! saying how much was cut; control characters are written as escapes (`\u{7}`), visibly.

/// The longest `error_reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// The shortest a cut word gets.
const MIN_WORD: usize = 64;
/// Room for the mark `…[N bytes cut]…`.
const MARK: usize = 24;

/// `message` in at most `max` bytes, its end (the cause) kept whole.
pub fn dead_letter_reason(message: &str, max: usize) -> String {
    let mut text = escape_controls(message);
    // Shorten the long words (keys, URLs) in their middles, all to one length (a key named
    // twice, for the object and for the failed call, is cut alike in both places): the longest
    // length that fits.
    if text.len() > max {
        let longest = text.split(' ').map(str::len).max().unwrap_or(0);
        let (mut fits, mut too_long) = (MIN_WORD, longest);
        while fits + 1 < too_long {
            let mid = (fits + too_long) / 2;
            if cap_words(&text, mid).len() <= max {
                fits = mid;
            } else {
                too_long = mid;
            }
        }
        text = cap_words(&text, fits);
    }
    if text.len() > max {
        // No word long enough: cut the middle of the whole, keeping the cause at the end.
        text = cut_middle(&text, max, 3);
    }
    text
}

fn escape_controls(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` with every word longer than `cap` bytes cut in its middle to `cap`.
fn cap_words(text: &str, cap: usize) -> String {
    text.split(' ')
        .map(|word| {
            if word.len() > cap + MARK {
                cut_middle(word, cap, 2)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` in at most `max` bytes: its head and tail around `…[N bytes cut]…`, the head
/// `1/head_part` of what is kept.
fn cut_middle(text: &str, max: usize, head_part: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(MARK);
    let head_len = floor_boundary(text, room / head_part);
    let tail_start = ceil_boundary(text, text.len() - (room - room / head_part));
    let cut = tail_start - head_len;
    format!(
        "{}…[{cut} bytes cut]…{}",
        &text[..head_len],
        &text[tail_start..]
    )
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_reason_is_kept_as_is() {
        let r = "s3://b/a.jpg: not an image";
        assert_eq!(dead_letter_reason(r, MAX_REASON_BYTES), r);
    }

    #[test]
    fn a_long_key_is_cut_in_its_middle_and_the_cause_kept() {
        let key = format!("start/{}/end.jpg", "é".repeat(900));
        let message = format!(
            "s3://photos/{key}: s3 GetObject photos/{key}: AccessDenied (HTTP 403): denied"
        );
        let r = dead_letter_reason(&message, MAX_REASON_BYTES);
        assert!(r.len() <= MAX_REASON_BYTES, "{} bytes", r.len());
        assert!(r.ends_with("AccessDenied (HTTP 403): denied"), "{r}");
        assert!(r.starts_with("s3://photos/start/"), "{r}");
        assert!(r.contains("bytes cut]…"), "{r}");
        assert!(r.contains("/end.jpg: s3 GetObject"), "{r}");
    }

    #[test]
    fn many_spaces_still_fit_and_keep_the_end() {
        let message = format!("{} the cause", "word ".repeat(400));
        let r = dead_letter_reason(&message, 200);
        assert!(r.len() <= 200, "{}", r.len());
        assert!(r.ends_with("the cause"), "{r}");
        assert!(r.contains("bytes cut]"), "{r}");
    }

    #[test]
    fn control_characters_are_escaped_visibly() {
        let r = dead_letter_reason("s3://b/bell\u{7}key.jpg: corrupt", MAX_REASON_BYTES);
        assert_eq!(r, "s3://b/bell\\u{7}key.jpg: corrupt");
    }
}
