//! Shell quoting for the scripts the seed carries.

/// Quotes `text` as one POSIX shell word.
pub fn quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | ',' | '=' | ':' | '@' | '+')
        });
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Escapes a path for an fstab field (space, tab, newline and backslash as octal).
pub fn fstab_field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' ' => out.push_str(r"\040"),
            '\t' => out.push_str(r"\011"),
            '\n' => out.push_str(r"\012"),
            '\\' => out.push_str(r"\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoted_words_survive_the_shell() {
        for word in [
            "plain",
            "",
            "with space",
            "it's",
            "$HOME `x` \"q\"",
            "-n",
            "a\nb",
            "*",
            "ünï",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
    }

    #[test]
    fn fstab_fields_escape_whitespace() {
        assert_eq!(fstab_field("/mnt/my dir\\x"), r"/mnt/my\040dir\134x");
    }
}
