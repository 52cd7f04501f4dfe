//! A command line split into argv without a shell: how a stdio MCP server's `--mcp.command` (and
//! `MCP_COMMAND`) becomes the program and arguments we execute, with no shell in between.

/// Splits a command line into argv without a shell: whitespace separates words; single quotes
/// keep everything literally; double quotes keep everything but `\"` and `\\`; a backslash outside
/// quotes escapes the next character. `Err` for an unterminated quote or a trailing backslash.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_command_without_a_shell() {
        assert_eq!(
            split_command("npx -y @scope/server").unwrap(),
            ["npx", "-y", "@scope/server"]
        );
        assert_eq!(
            split_command(r#"python -c 'print("a b")' "x \"y\"" z\ w"#).unwrap(),
            ["python", "-c", r#"print("a b")"#, r#"x "y""#, "z w"]
        );
        assert_eq!(
            split_command("a;b | c $(d)").unwrap(),
            ["a;b", "|", "c", "$(d)"]
        );
        assert_eq!(split_command("''").unwrap(), [""]);
        assert!(split_command("'open").is_err());
        assert!(split_command("\"open").is_err());
        assert!(split_command("trailing\\").is_err());
        assert!(split_command("   ").is_err());
    }
}
