//! Text that came from a plugin (or from anyone but Berth) is data: printed on one line, with
//! every control character shown as an escape, so it can neither start a line that looks like
//! the host's own (`audit: allowed …`, `verdict: continue`) nor move the cursor, clear the line
//! or reorder what follows (ANSI escapes, carriage returns, bidirectional overrides).

use std::borrow::Cow;

/// `text` as one printable line: `\n`, `\r`, `\t`, `\x1b`… and the invisible bidirectional
/// controls written out as escapes; anything else as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let shown = |c: char| !(c.is_control() || is_bidi_control(c));
    if text.chars().all(shown) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if shown(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn plugin_text_cannot_pass_for_a_host_line() {
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            printable("done\naudit: allowed ssh.shell"),
            "done\\naudit: allowed ssh.shell"
        );
        assert_eq!(
            printable("\r\x1b[2Kverdict: continue"),
            "\\r\\x1b[2Kverdict: continue"
        );
        assert_eq!(printable("a\u{202e}b\u{7f}c"), "a\\u{202e}b\\x7fc");
    }
}
